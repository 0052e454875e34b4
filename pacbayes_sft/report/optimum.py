"""The best difficulty bucket per (base, objective, n): observed, predicted, and how sure.

- observed: the bucket with the smallest measured test risk (the bound's loss, averaged over the
  whole test set), per seed and for the seed mean;
- raw bound: the bucket minimising the two-gap total (MC risk upper + G_gen + G_ext);
- calibrated two-gap predictor: test risk ≈ R̂ + a·sqrt(KL/n) + b·TV with a, b ≥ 0 fitted by
  non-negative least squares on the cells of the *other* budgets (leave-one-n-out), then the
  bucket minimising the prediction;
- the bootstrap over test items and seeds of the observed best (:mod:`.uncertainty`);
- where ``pacbayes-sft race`` ran (``<run>/race/*.json``, :mod:`pacbayes_sft.racing`), the
  race's answer on fresh test items, its ε, the test items and training seeds it used and its
  compute seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import defaults
from ..bounds import is_vacuous
from ..certify.config import item_losses
from ..racing.files import race_summaries
from .uncertainty import bootstrap_best, spearman

RACE_COLS = ["race", "race_eps", "race_items", "race_seeds", "race_seconds"]


def bootstrap_optimum(items: dict[tuple, dict], loss: str, *, n_boot: int = defaults.BEST_BUCKET_N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (base, objective, n): the bootstrap over test items and seeds of the best bucket under
    ``loss`` (:func:`pacbayes_sft.report.uncertainty.bootstrap_best`)."""
    groups: dict[tuple, dict[str, dict[int, np.ndarray]]] = {}
    for (base, obj, n, bucket, s), it in items.items():
        if loss == "answer_error" and "answer_correct" not in it:
            return pd.DataFrame()
        groups.setdefault((base, obj, n), {}).setdefault(bucket, {})[s] = item_losses(loss, it)
    rows = []
    for (base, obj, n), by_bucket in sorted(groups.items()):
        seeds = sorted(set.intersection(*(set(v) for v in by_bucket.values())))
        table = {b: np.stack([v[s] for s in seeds]) for b, v in by_bucket.items()}
        res = bootstrap_best(table, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "base": base,
                "objective": obj,
                "n": int(n),
                "p_best": ", ".join(
                    f"{b} {p:.2f}" for b, p in sorted(res.p_best.items(), key=lambda x: -x[1]) if p >= 0.005
                ),
                "indistinguishable": ", ".join(res.indistinguishable),
                "determined": res.determined,
                "items_needed": res.items_needed,
            }
        )
    return pd.DataFrame(rows)


def race_table(out_dir) -> pd.DataFrame:
    """Per raced (base, objective, n): the race's answer ("op7-8" best at its level; "tie: a, b"
    any within race_eps of the best; "open: a, b" the cap came first and the best is among them),
    race_eps, race_items (distinct test items, the sweep's own included), race_seeds (the training
    seeds averaged per item) and race_seconds (compute). Empty when no race has finished."""
    rows = []
    for doc in race_summaries(out_dir):
        res, g = doc["result"], doc["group"]
        prefix = {"best": "", "epsilon_tie": "tie: ", "cap": "open: "}[res.reason]
        rows.append(
            {
                "base": g["base"],
                "objective": g["objective"],
                "n": int(g["n"]),
                "race": prefix + ", ".join(res.answer),
                "race_eps": res.epsilon,
                "race_items": res.n_items,
                "race_seeds": len(doc["cell_seeds"]),
                "race_seconds": float(doc["seconds"]),
            }
        )
    return pd.DataFrame(rows, columns=["base", "objective", "n", *RACE_COLS])


def with_races(opt: pd.DataFrame, out_dir) -> pd.DataFrame:
    """The optimum table with :func:`race_table`'s columns beside it, where races exist."""
    races = race_table(out_dir)
    if races.empty or opt.empty or "race" in opt:
        return opt
    return opt.merge(races, on=["base", "objective", "n"], how="left")


def calibrated_predictions(ct: pd.DataFrame) -> pd.Series:
    """Leave-one-n-out fit of test_risk − R̂ ≈ a·sqrt(KL/n) + b·TV (a, b ≥ 0); returns predictions."""
    from scipy.optimize import nnls

    pred = pd.Series(np.nan, index=ct.index)
    for _, g in ct.groupby(["base", "objective"]):
        for n in g["n"].unique():
            fit = g[g["n"] != n]
            target = g[g["n"] == n]
            if len(fit) < 2:
                coef = np.array([1.0, 1.0])  # no other budget to learn from: the raw shapes
            else:
                A = fit[["sqrt_kl_over_n", "tv"]].to_numpy()
                y = (fit["test_risk"] - fit["mc_mean_risk"]).to_numpy()
                coef, _ = nnls(A, y)
            pred[target.index] = target["mc_mean_risk"] + target[["sqrt_kl_over_n", "tv"]].to_numpy() @ coef
    return pred


def optimum_table(ct: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per (base, objective, n): observed, raw-bound and calibrated best bucket, with seed spread.

    ``ct`` is :func:`pacbayes_sft.report.table.cell_table` with a ``calibrated`` column from
    :func:`calibrated_predictions`.
    """
    rank = {b: i for i, b in enumerate(order)}
    rows = []
    for (base, obj, n), g in ct.groupby(["base", "objective", "n"]):
        m = g.groupby("bucket")[["test_risk", "total", "calibrated"]].mean()
        per_seed = g.loc[g.groupby("seed")["test_risk"].idxmin(), "bucket"].map(rank)
        obs = m["test_risk"].idxmin()
        raw = m["total"].idxmin()
        cal = m["calibrated"].idxmin()
        rows.append(
            {
                "base": base,
                "objective": obj,
                "n": n,
                "observed": obs,
                "raw_bound": raw,
                "calibrated": cal,
                "observed_idx": rank[obs],
                "raw_idx": rank[raw],
                "calibrated_idx": rank[cal],
                "seed_bests": order[int(per_seed.min())]
                + ("" if per_seed.min() == per_seed.max() else f" … {order[int(per_seed.max())]}"),
                "seed_idx_min": int(per_seed.min()),
                "seed_idx_max": int(per_seed.max()),
                "seed_idx_mean": float(per_seed.mean()),
                "n_seeds": int(g["seed"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def summary(ct: pd.DataFrame, opt: pd.DataFrame) -> dict:
    """Agreement rates, Spearman correlations and whether the optimum moves harder (``ct`` as in optimum_table)."""
    out = {}
    det = opt["determined"].astype(bool) if "determined" in opt else pd.Series(False, index=opt.index)
    out["n_budgets"], out["n_determined"] = len(opt), int(det.sum())
    race = opt["race"] if "race" in opt else pd.Series(None, index=opt.index, dtype=object)
    raced, answer = race.notna(), race.fillna("").astype(str)
    out["n_raced"], out["n_race_ties"] = int(raced.sum()), int(answer.str.startswith("tie: ").sum())
    out["n_race_best"] = int((raced & ~answer.str.startswith(("tie: ", "open: "))).sum())
    # a race's answer is certified and the bootstrap's is not: the two are never added into one count
    decided = raced & ~answer.str.startswith("open: ")
    out["n_race_decided"] = int(decided.sum())
    members = answer.str.removeprefix("tie: ").str.split(", ")  # the buckets of each decided answer
    out["n_race_ties_of_all"] = int((answer.str.startswith("tie: ") & (members.str.len() == ct["bucket"].nunique())).sum())
    for col in ("raw_bound", "calibrated"):
        if col in opt:
            hits = [str(p) in m for p, m in zip(opt.loc[decided, col], members[decided])]
            out[f"{col}_in_race_answer"] = int(sum(hits))
    for col in ("raw", "calibrated"):
        d = (opt[f"{col}_idx"] - opt["observed_idx"]).abs()
        out[f"{col}_exact_agreement"] = float((d == 0).mean())
        out[f"{col}_within_one"] = float((d <= 1).mean())
        out[f"{col}_exact_agreement_determined"] = float((d[det] == 0).mean()) if det.any() else float("nan")

    out["n_cells"] = len(ct)
    out["n_vacuous"] = int(is_vacuous(ct["mc_risk_upper"], ct["g_gen"]).sum())  # certified bound = 1
    out["spearman_total_vs_test_risk"] = spearman(ct["total"], ct["test_risk"])
    out["spearman_calibrated_vs_test_risk"] = spearman(ct["calibrated"], ct["test_risk"])
    moves = []
    for _, g in opt.groupby(["base", "objective"]):
        g = g.sort_values("n")
        if len(g) >= 2:
            moves.append(
                bool(
                    np.all(np.diff(g["observed_idx"].to_numpy()) >= 0)
                    and g["observed_idx"].iloc[-1] > g["observed_idx"].iloc[0]
                )
            )
    out["observed_optimum_moves_harder_with_n"] = moves
    return out
