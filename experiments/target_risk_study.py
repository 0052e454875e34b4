"""How well does reweighting a labelled pool predict each cell's risk on an unlabelled target?

For every cell of an iGSM run folder whose adapters are on disk (e.g. ``runs/demo`` after
``make demo``), this evaluates the cell's model once on a labelled *pool* (fresh problems of every
test op, from training templates by default) and on each target mixture, then estimates the
target's answer error from the pool alone with the estimators of
:mod:`pacbayes_sft.estimators.target_risk` (weights fitted once per target, from prompts only) and
scores them against the error measured on the target items:

    python experiments/target_risk_study.py runs/demo --out docs/results/target_risk_demo

Targets: ``uniform`` (the run's own test set: op 1-8, held-out templates) and ``skewed`` (fresh
held-out-template problems, op k with probability ∝ k). Estimators: ``pool_mean`` (no
reweighting), ``oracle_slices`` (the pool's per-op errors weighted by the target's true op shares:
the ceiling of any slice method), ``slice_weights`` and ``density_ratio`` on structure counts and
on structure + TF-IDF; and, with ``--source K`` > 0, ATC and DoC fitted on K held-out problems of
each cell's own training distribution, once on the confidence of the whole continuation
(``atc``, ``doc``) and once on the final answer's (``atc_answer``, ``doc_answer``).
Writes ``estimates.csv`` (one row per cell, target and estimator),
``scores.csv`` (MAE, mean signed error, within-budget Spearman, picks matching the measured best)
and ``weights.json`` (each target's estimated op shares, ESS, overlap).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from pacbayes_sft.data.igsm import IGSMConfig, generate
from pacbayes_sft.estimators.answers import collect_answers, igsm_extractor
from pacbayes_sft.estimators.label_free.methods import ATC, DoC
from pacbayes_sft.estimators.target_risk import DensityRatioWeights, SliceWeights
from pacbayes_sft.racing.contenders import Contenders, has_adapter
from pacbayes_sft.sweep.cells import find_cell
from pacbayes_sft.sweep.runner import sweep_context
from pacbayes_sft.sweep.store import folder_config, valid_cells

POOL_SEED = 7_000_000  # far from the test set (test.seed + op) and the races' rounds (test.seed + 10⁶ + r)
SKEWED_SEED = 8_000_000


def problems(ops: list[int], counts: dict[int, int], split: str, seed: int, modulus: int) -> list:
    """``counts[op]`` problems of each op, from its own stream, in ``ops`` order."""
    cfg = IGSMConfig(modulus=modulus)
    return [p for op in ops for p in generate(counts[op], [op], split=split, seed=seed * 1000 + op, config=cfg)]


def slice_ordered(items: list) -> list:
    """``items`` in the order the sweep's evaluation returns per-item results (grouped by op, by first appearance)."""
    groups: dict[int, list] = {}
    for ex in items:
        groups.setdefault(ex.op, []).append(ex)
    return [ex for exs in groups.values() for ex in exs]


def estimators(pool: list, target: list) -> dict:
    """Fitted weight models for one (pool, target) pair, by name."""
    prompts, ops = [p.prompt for p in pool], [p.op for p in pool]
    tp = [p.prompt for p in target]
    return {
        "slice_weights:structure": SliceWeights(features="structure").fit(prompts, ops, tp),
        "slice_weights:structure+tfidf": SliceWeights(features="structure+tfidf").fit(prompts, ops, tp),
        "density_ratio:structure": DensityRatioWeights(features="structure").fit(prompts, tp),
        "density_ratio:structure+tfidf": DensityRatioWeights(features="structure+tfidf").fit(prompts, tp),
    }


def confidence_rows(contenders, ctx, rec, source_n: int, targets: dict) -> dict[str, list[tuple]]:
    """target -> [(name, estimate, lower, upper)] of ATC and DoC on both confidences, fitted on
    ``source_n`` held-out problems of the cell's own training stream."""
    cell = find_cell(ctx.cfg, rec.id, str(ctx.out))
    source = ctx.task.held_out_examples(cell, source_n)
    model, tok = contenders.model(rec), ctx.bases[rec.base][1]
    gen = {"extract": igsm_extractor(ctx.cfg.task.modulus), "max_new_tokens": ctx.cfg.eval.max_new_tokens,
           "batch_size": ctx.cfg.eval.batch_size}  # fmt: skip
    src = collect_answers(model, tok, source, judge=ctx.task.judge, **gen)
    out = {}
    for t, items in targets.items():
        tgt = collect_answers(model, tok, items, judge=ctx.task.judge, **gen)  # correctness: the diagnostics only
        if t == "uniform":
            DIAGNOSTICS.extend(
                {"cell": rec.id, "op": p.op, "correct": c, "confidence": a, "answer_confidence": b}
                for p, c, a, b in zip(items, tgt.correct, tgt.confidences, tgt.answer_confidences)
            )
        rows = []
        for kind, sc, tc in (("", src.confidences, tgt.confidences), ("_answer", src.answer_confidences, tgt.answer_confidences)):
            for method, name in ((ATC, "atc"), (DoC, "doc")):
                r = method(n_boot=300).fit(sc, src.correct).predict(tc)
                rows.append((name + kind, r.estimate, r.lower, r.upper))
        out[t] = rows
    return out


DIAGNOSTICS: list[dict] = []  # per test item of the uniform target: op, correctness, both confidences


def confidence_diagnostics(rows: list[dict]) -> pd.DataFrame:
    """Per op: mean of each confidence and its AUROC for right against wrong answers (pooled over cells)."""
    from sklearn.metrics import roc_auc_score

    d, out = pd.DataFrame(rows), []
    for op, g in d.groupby("op"):
        row = {"op": op, "accuracy": g["correct"].mean()}
        for col in ("confidence", "answer_confidence"):
            row[f"mean_{col}"] = g[col].mean()
            both = g["correct"].nunique() == 2
            row[f"auroc_{col}"] = roc_auc_score(g["correct"], g[col]) if both else np.nan
        out.append(row)
    return pd.DataFrame(out)


def scores(est: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (target, name), g in est.groupby(["target", "estimator"]):
        err = g["estimate"] - g["measured"]
        rho, picks = [], 0
        for _, b in g.groupby(["base", "objective", "n"]):
            if len(b) >= 3:
                rho.append(spearmanr(b["estimate"], b["measured"]).statistic)
            picks += int(b.loc[b["estimate"].idxmin(), "bucket"] == b.loc[b["measured"].idxmin(), "bucket"])
        rows.append({
            "target": target, "estimator": name, "mae": float(err.abs().mean()), "mean_signed": float(err.mean()),
            "spearman_within_budget": float(np.nanmean(rho)) if rho else float("nan"),
            "picks_matching_measured_best": picks, "budgets": g.groupby(["base", "objective", "n"]).ngroups,
            "interval_covers": float(((g["lower"] <= g["measured"]) & (g["measured"] <= g["upper"])).mean()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an iGSM run folder with its adapters (e.g. runs/demo)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pool-per-op", type=int, default=50)
    ap.add_argument("--pool-split", choices=("train", "test"), default="train", help="templates of the pool")
    ap.add_argument("--skewed", type=int, default=400, help="items of the skewed target")
    ap.add_argument("--source", type=int, default=0, help="held-out source problems per cell for ATC/DoC (0: none)")
    args = ap.parse_args()
    cfg, state = folder_config(args.run)
    recs = [r for r in valid_cells(args.run, state) if not r.is_base]
    missing = [r.id for r in recs if not has_adapter(args.run, r)]
    if missing:
        raise SystemExit(f"run: cells without adapters under {args.run / 'adapters'}: {missing[:3]}")
    ctx = sweep_context(cfg, args.run)
    ops, mod = list(cfg.test.ops), cfg.task.modulus
    pool = slice_ordered(problems(ops, dict.fromkeys(ops, args.pool_per_op), args.pool_split, POOL_SEED, mod))
    shares = np.arange(1, len(ops) + 1) / np.arange(1, len(ops) + 1).sum()
    counts = {op: int(c) for op, c in zip(ops, np.random.default_rng(SKEWED_SEED).multinomial(args.skewed, shares))}
    targets = {"uniform": slice_ordered(list(ctx.task.test_set)), "skewed": slice_ordered(problems(ops, counts, "test", SKEWED_SEED, mod))}
    fitted = {t: estimators(pool, items) for t, items in targets.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "weights.json").write_text(json.dumps({
        t: {name: {"target_shares": getattr(w, "target_shares_", np.array([])).round(4).tolist(), "ess": round(w.ess_, 1),
                   "outside_share": w.outside_share_, "warning": w.warning_} for name, w in ws.items()}
        for t, ws in fitted.items()
    }, indent=1))  # fmt: skip
    contenders, rows = Contenders(ctx), []
    for rec in recs:
        pool_err = contenders.losses_on(rec, pool)  # in slice_ordered order
        conf_rows = confidence_rows(contenders, ctx, rec, args.source, targets) if args.source else {}
        pool_op = np.array([p.op for p in pool])
        for t, items in targets.items():
            measured = float(contenders.losses_on(rec, items).mean())
            true = np.array([sum(p.op == op for p in items) for op in ops]) / len(items)
            oracle = float(true @ np.array([pool_err[pool_op == op].mean() for op in ops]))
            base = {"cell": rec.id, "base": rec.base, "objective": rec.objective, "n": rec.n, "bucket": rec.bucket, "target": t, "measured": measured}
            rows.append(base | {"estimator": "pool_mean", "estimate": float(pool_err.mean()), "lower": np.nan, "upper": np.nan})
            rows.append(base | {"estimator": "oracle_slices", "estimate": oracle, "lower": np.nan, "upper": np.nan})
            for name, w in fitted[t].items():
                r = w.risk(pool_err, n_boot=500, random_state=0)
                rows.append(base | {"estimator": name, "estimate": r.estimate, "lower": r.lower, "upper": r.upper})
            for name, e, lo, hi in conf_rows.get(t, []):
                rows.append(base | {"estimator": name, "estimate": e, "lower": lo, "upper": hi})
        contenders.drop([rec])
        print(f"{rec.id}: done", flush=True)
    est = pd.DataFrame(rows)
    est.to_csv(args.out / "estimates.csv", index=False, float_format="%.6g")
    if DIAGNOSTICS:
        diag = confidence_diagnostics(DIAGNOSTICS)
        diag.to_csv(args.out / "confidence_by_op.csv", index=False, float_format="%.4g")
        print(diag.to_string(index=False))
    sc = scores(est)
    sc.to_csv(args.out / "scores.csv", index=False, float_format="%.4g")
    print(sc.to_string(index=False))


if __name__ == "__main__":
    main()
