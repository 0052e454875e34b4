"""Label-free estimates of every cell's test risk, scored against the measured risk.

For each cell that collected ``label_free`` columns and each test mixture (the uniform test set,
and a mixture skewed to the hard slices, drawn from the same items), every registered estimator
(:data:`~pacbayes_sft.estimators.label_free.ESTIMATORS`) is computed from the record alone (plus the TV proxy
between the cell's training prompts and the mixture's test prompts), beside the measured answer
error of the cell's point model on the same items. Two-gap totals are added as estimators too:
U_MC + G_gen + G_ext with G_ext the TV proxy (the paper's) or an estimator's shift above the
source error, max(0, estimate − source error).

The scores, per (mixture, estimator):

- ``mae``: mean |estimate − measured| over cells;
- ``spearman``: mean over (base, objective, n) groups whose buckets span ≥ ``span`` of measured
  risk (seed-averaged) of Spearman(estimate, measured) across the buckets;
- ``pick_in_set``: share of groups whose bucket with the smallest estimate is in the observed 95%
  set of the paired bootstrap (:func:`~pacbayes_sft.report.uncertainty.bootstrap_best`);
- ``exact``: share of the determined groups whose pick is the observed best.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .. import defaults
from ..certify.tv_term import classifier_tv_term
from ..estimators.label_free import ESTIMATORS
from ..racing.files import race_summaries
from ..sweep.cells import find_cell
from ..sweep.label_free import cell_estimates, measured_risk, needs_examples, task_examples
from ..sweep.record import CellRecord
from ..sweep.runner import sweep_context
from ..sweep.store import folder_config, valid_cells
from .uncertainty import bootstrap_best, spearman

MIXTURES = ("uniform", "skewed")
HARD_FROM = 5
"""The skewed mixture keeps every item of the slices ≥ this op count and a quarter of the others."""


def mixture_items(slices: Sequence, mixture: str) -> list[int]:
    """Indices of the test items in ``mixture``: all (``uniform``), or every item of the hard
    slices with the first quarter of each easy slice (``skewed``: 4:1 towards the hard ops)."""
    if mixture == "uniform":
        return list(range(len(slices)))
    if mixture != "skewed":
        raise ValueError(f"mixture must be one of {MIXTURES}, got {mixture!r}")
    sizes: dict = defaultdict(int)
    for s in slices:
        sizes[s] += 1
    seen: dict = defaultdict(int)
    keep = []
    for i, s in enumerate(slices):
        seen[s] += 1
        if int(s) >= HARD_FROM or seen[s] <= max(1, sizes[s] // 4):
            keep.append(i)
    return keep


def _groups(recs: list[CellRecord]) -> dict[tuple, list[CellRecord]]:
    by: dict[tuple, list[CellRecord]] = defaultdict(list)
    for r in recs:
        by[(r.base, r.objective, r.n, r.bucket)].append(r)
    return by


def _tv(ctx, rec: CellRecord, items: list[int], cache: dict) -> tuple[float, float]:
    """TV proxy (estimate, lower at δ_TV = 0.01) between the cell's training prompts and the items'."""
    key = (rec.id, tuple(items))
    if key not in cache:
        cell = find_cell(ctx.cfg, rec.id, str(ctx.out))
        train = [e.prompt for e in ctx.task.train_examples(cell)]
        test = [ctx.task.test_set[i].prompt for i in items]
        term = classifier_tv_term(train, test, ctx.cfg.tv, 0.01, int(rec.seed or 0))
        cache[key] = (term.estimate, term.lower if term.lower is not None else 0.0)
    return cache[key]


def estimates_table(out: str | Path, *, mixtures: Sequence[str] = MIXTURES, n_boot: int = defaults.LABEL_FREE_REPORT_N_BOOT) -> pd.DataFrame:
    """One row per (cell, mixture, estimator): the estimate with its interval and the measured
    answer error of the cell's point model on the mixture's items (see the module docstring)."""
    out = Path(out)
    cfg, state = folder_config(out)
    recs = [r for r in valid_cells(out, state) if not r.is_base and r.label_free and "answer_correct" in r.items]
    if not recs:
        raise ValueError(
            f"{str(out)!r} holds no cell with label_free columns and generated test answers "
            "(sweep with label_free.source or label_free.pool > 0 and eval.generate)"
        )
    ctx, cache, rows = sweep_context(cfg, out), {}, []
    groups = _groups(recs)
    with_examples = needs_examples()  # only then are the cells' held-out examples drawn again
    for rec in recs:
        seeds = groups[(rec.base, rec.objective, rec.n, rec.bucket)]
        examples = task_examples(ctx, find_cell(ctx.cfg, rec.id, str(out))) if with_examples else None
        for mix in mixtures:
            items = mixture_items(rec.items["slice"], mix)
            tv = None if mix == "uniform" else _tv(ctx, rec, items, cache)
            est = cell_estimates(rec, seeds, items, tv, examples=examples, n_boot=n_boot)
            measured = measured_risk(rec, items)
            key = {"base": rec.base, "objective": rec.objective, "n": rec.n, "bucket": rec.bucket, "seed": rec.seed,
                   "mixture": mix, "measured": measured}  # fmt: skip
            rows += [key | r for r in est] + [key | r for r in _totals(rec, est, tv)]
    return pd.DataFrame(rows)


def _totals(rec: CellRecord, est: list[dict], tv) -> list[dict]:
    """The two-gap totals U_MC + G_gen + G_ext: G_ext the TV proxy, or the shift max(0, estimate −
    source error) of each estimator whose spec asks for one (``shift_total``)."""
    t = rec.terms
    certified_part = t["mc_risk_upper"] + t["g_gen"]
    tv_est = t["tv"] if tv is None else tv[0]
    rows = [{"name": "total:tv", "estimate": min(1.0, certified_part + tv_est), "certified": False}]
    source = next((r["estimate"] for r in est if r["name"] == "no_shift"), None)
    for r in est if source is not None else ():  # a shift is measured from the source error
        spec = ESTIMATORS.get(r["name"])
        if spec is None or not spec.shift_total:
            continue
        shift = max(0.0, r["estimate"] - source)
        rows.append({"name": f"total:{r['name']}", "estimate": min(1.0, certified_part + shift), "certified": False})
    return [r | {"lower": np.nan, "upper": np.nan, "assumptions": "U_MC + G_gen + G_ext"} for r in rows]


def _observed_sets(out: Path, mixtures: Sequence[str]) -> dict[tuple, object]:
    """The paired bootstrap's best bucket per (base, objective, n, mixture), on the mixture's items."""
    _, state = folder_config(out)
    recs = [r for r in valid_cells(out, state) if not r.is_base]
    by: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        by[(r.base, r.objective, r.n)][r.bucket].append(r)
    sets = {}
    for (base, obj, n), buckets in by.items():
        seeds = set.intersection(*({r.seed for r in v} for v in buckets.values()))
        for mix in mixtures:
            losses = {}
            for b, rs in buckets.items():
                rows = [r for r in sorted(rs, key=lambda r: r.seed) if r.seed in seeds]
                items = mixture_items(rows[0].items["slice"], mix)
                losses[b] = np.array([[1.0 - r.items["answer_correct"][i] for i in items] for r in rows])
            sets[(base, obj, n, mix)] = bootstrap_best(losses, n_boot=defaults.BEST_BUCKET_N_BOOT, seed=0)
    return sets


RACE_MIXTURE = {"uniform": None, "skewed": "skewed"}
"""The race (``decide.mixtures`` name; None: the test mixture) that decides each scored mixture's
groups. A ``skewed`` race must draw the weights of :func:`mixture_items` (op ≥ HARD_FROM four
times the others), as ``experiments/configs/decide_study.yaml`` does."""


def _race_answers(out: Path) -> dict[tuple, tuple[str, ...]]:
    """(mixture, base, objective, n) → the answer of the group's race on that mixture, where a race
    decided it (a single best or an ε-tie)."""
    return {
        (mix, d["group"]["base"], d["group"]["objective"], int(d["group"]["n"])): d["result"].answer
        for mix, race in RACE_MIXTURE.items()
        for d in race_summaries(out, mixture=race)
        if d["result"].reason != "cap"
    }


def _race_columns(hits: list[bool], chance: list[float]) -> dict:
    """The share of race-decided groups whose pick is the race's best or in its ε-tie, its 95%
    Wilson interval, and the chance rate of a uniformly random pick (mean |answer| / buckets)."""
    if not hits:
        return {"in_race_answer": np.nan, "race_decided": 0, "chance_in_race_answer": np.nan}
    ci = stats.binomtest(int(np.sum(hits)), len(hits)).proportion_ci(0.95, method="wilson")
    return {"in_race_answer": float(np.mean(hits)), "in_race_answer_lo": float(ci.low), "in_race_answer_hi": float(ci.high),
            "race_decided": len(hits), "chance_in_race_answer": float(np.mean(chance))}  # fmt: skip


def score_table(out: str | Path, table: pd.DataFrame, *, span: float = 0.05) -> pd.DataFrame:
    """Per (mixture, estimator): MAE, mean signed error (``bias``), mean within-budget Spearman, pick-in-95%-set and exact rates,
    with the chance rates beside them: ``chance_in_set``, the share of groups a uniformly random pick
    would land in the set (the mean of |set| / buckets), and ``chance_all_in_set``, the probability
    that it lands in the set in every group (their product). On each mixture, where its races
    (:data:`RACE_MIXTURE`) decided groups: ``in_race_answer``, the share
    of them whose pick is the race's best or in its ε-tie (certified answers), beside
    ``chance_in_race_answer``."""
    sets = _observed_sets(Path(out), sorted(table["mixture"].unique()))
    answers = _race_answers(Path(out))
    rows = []
    for (mix, name), t in table.groupby(["mixture", "name"]):
        mae = float((t["estimate"] - t["measured"]).abs().mean())
        bias = float((t["estimate"] - t["measured"]).mean())
        rhos, picks, exact, chance, race_hits, race_chance = [], [], [], [], [], []
        for (base, obj, n), g in t.groupby(["base", "objective", "n"]):
            per = g.groupby("bucket")[["estimate", "measured"]].mean()
            best = sets[(base, obj, n, mix)]
            pick = per["estimate"].idxmin()
            picks.append(pick in best.indistinguishable)
            chance.append(len(best.indistinguishable) / len(per))  # a uniformly random pick lands in the set
            if best.determined:
                exact.append(pick == best.observed)
            answer = answers.get((mix, base, obj, int(n)))
            if answer is not None:
                race_hits.append(pick in answer)
                race_chance.append(len(answer) / len(per))
            if np.ptp(per["measured"]) >= span and len(per) >= 3:
                rho = spearman(per["estimate"], per["measured"])
                rhos.append(0.0 if np.isnan(rho) else rho)  # a constant estimate ranks nothing
        rows.append({"mixture": mix, "estimator": name, "mae": mae, "bias": bias, "spearman": float(np.mean(rhos)) if rhos else np.nan,
                     "groups_ranked": len(rhos), "pick_in_set": float(np.mean(picks)), "groups": len(picks),
                     "chance_in_set": float(np.mean(chance)), "chance_all_in_set": float(np.prod(chance)),
                     "exact": float(np.mean(exact)) if exact else np.nan, "determined": len(exact)}
                    | (_race_columns(race_hits, race_chance) if any(k[0] == mix for k in answers) else {}))  # fmt: skip
    return pd.DataFrame(rows).sort_values(["mixture", "mae"]).reset_index(drop=True)


PICKERS = ("iw_slices", "iw", "doc", "atc")
"""The label-free estimators whose picks the optimum table shows, in this order (when present)."""


def label_free_picks(table: pd.DataFrame, mixture: str = "uniform") -> pd.DataFrame:
    """Per (base, objective, n): the bucket each estimator of :data:`PICKERS` would pick on
    ``mixture`` (the smallest seed-averaged estimate), as one column ``label_free_picks``
    ("iw_slices: hard; iw: medium"); empty when no such estimator has rows."""
    t = table[(table["mixture"] == mixture) & table["name"].isin(PICKERS)]
    rows = []
    for (base, obj, n), g in t.groupby(["base", "objective", "n"]):
        per = g.groupby(["name", "bucket"])["estimate"].mean()
        picks = [f"{name}: {per[name].idxmin()}" for name in PICKERS if name in per.index.get_level_values(0)]
        rows.append({"base": base, "objective": obj, "n": int(n), "label_free_picks": "; ".join(picks)})
    return pd.DataFrame(rows, columns=["base", "objective", "n", "label_free_picks"])
