"""Tidy results → tables, plots and a self-contained report; predicted vs observed optimum.

``build_report(out_dir)`` merges every finished cell under ``out_dir/cells`` (from any number of
shards) into one tidy table (``results.parquet`` / ``results.csv``: one row per cell × seed ×
test slice × metric), then writes PNG plots, ``summary.csv``, ``report.md`` and ``report.html``.

Predictions of the best difficulty bucket for each (base, objective, n):

- raw bound: the bucket minimising the two-gap total (MC risk upper + G_gen + G_ext);
- calibrated two-gap predictor: test risk ≈ R̂ + a·sqrt(KL/n) + b·TV with a, b ≥ 0 fitted by
  non-negative least squares on the cells of the *other* budgets (leave-one-n-out), then the
  bucket minimising the prediction.

The observed optimum is the bucket with the smallest measured test risk (the bound's loss,
averaged over the whole test set) — per seed, and for the seed mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..sweep.config import SweepConfig
from ..sweep.store import folder_config, valid_cells
from .figures import HELD_OUT_MARKS

KEYS = ["base", "objective", "n", "bucket", "seed"]


def collect(out_dir: str | Path) -> tuple[pd.DataFrame, SweepConfig]:
    """Tidy table of every finished cell (any shard) and the sweep's config."""
    out = Path(out_dir)
    cfg, state = folder_config(out)
    records = []
    for rec in valid_cells(out, state):
        c = rec["cell"]
        key = {k: c.get(k) for k in KEYS}
        for r in rec["rows"]:
            records.append(
                key
                | {"slice": str(r["slice"]), "metric": r["metric"], "value": r["value"], "n_examples": r["n_examples"]}
            )
        for m, v in rec.get("terms", {}).items():
            records.append(key | {"slice": "train", "metric": m, "value": v, "n_examples": c.get("n")})
    if not records:
        raise ValueError(f"no finished cells in {str(out / 'cells')!r}")
    df = pd.DataFrame(records)
    return df, cfg


RISK_COLUMNS = {"token_error": "token_error", "sequence_error": "exact_match", "answer_error": "answer_accuracy"}


def cell_table(df: pd.DataFrame, loss: str) -> pd.DataFrame:
    """One row per fine-tuned cell: test risk/accuracy over the whole test set and the bound terms."""
    cells = df[df["objective"] != "base"]
    test = cells[cells["slice"] != "train"]
    w = test.assign(wv=test["value"] * test["n_examples"])
    agg = w.groupby([*KEYS, "metric"]).agg(wv=("wv", "sum"), count=("n_examples", "sum")).reset_index()
    agg["value"] = agg["wv"] / agg["count"]
    wide = agg.pivot_table(index=KEYS, columns="metric", values="value").reset_index()
    terms = cells[cells["slice"] == "train"].pivot_table(index=KEYS, columns="metric", values="value").reset_index()
    t = wide.merge(terms, on=KEYS, how="left")
    col = RISK_COLUMNS[loss]
    if col not in t:
        raise ValueError(f"the cells hold no {col!r} results, which loss {loss!r} needs")
    t["test_risk"] = t[col] if loss == "token_error" else 1.0 - t[col]
    t["n"] = t["n"].astype(int)
    return t


ITEM_LOSSES = {
    "token_error": lambda it: np.asarray(it["token_error"], dtype=float),
    "sequence_error": lambda it: 1.0 - np.asarray(it["exact_match"], dtype=float),
    "answer_error": lambda it: 1.0 - np.asarray(it["answer_correct"], dtype=float),
}


def collect_items(out_dir: str | Path) -> dict[tuple, dict]:
    """Per-item results of every finished fine-tuned cell, keyed by (base, objective, n, bucket, seed)."""
    out = Path(out_dir)
    items = {}
    for rec in valid_cells(out):
        c = rec["cell"]
        if "items" in rec and c.get("n"):
            items[tuple(c[k] for k in KEYS)] = rec["items"]
    return items


def bootstrap_optimum(items: dict[tuple, dict], loss: str, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (base, objective, n): the bootstrap over test items and seeds of the best bucket under
    ``loss`` (:func:`pacbayes_sft.uncertainty.bootstrap_best`)."""
    from .uncertainty import bootstrap_best

    groups: dict[tuple, dict[str, dict[int, np.ndarray]]] = {}
    for (base, obj, n, bucket, s), it in items.items():
        if loss == "answer_error" and "answer_correct" not in it:
            return pd.DataFrame()
        groups.setdefault((base, obj, n), {}).setdefault(bucket, {})[s] = ITEM_LOSSES[loss](it)
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


def bucket_order(cfg: SweepConfig) -> list[str]:
    """Buckets from easiest to hardest (by mean op count)."""
    return sorted(cfg.buckets, key=lambda b: (np.mean(cfg.buckets[b]), b))


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


def complete_budgets(ct: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The cells of the (base, objective, n) whose every bucket has a finished cell (a best
    bucket among the finished ones alone would be a different question), and the ones left out."""
    groups = ct.groupby(["base", "objective", "n"])["bucket"].agg(lambda b: set(order) <= set(b))
    partial = [f"{b}/{o}/n={n}" for (b, o, n), full in groups.items() if not full]
    full = groups[groups].index
    keep = ct.set_index(["base", "objective", "n"]).index.isin(full)
    return ct[keep].reset_index(drop=True), partial


def optimum_table(ct: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per (base, objective, n): observed, raw-bound and calibrated best bucket, with seed spread.

    ``ct`` is :func:`cell_table` with a ``calibrated`` column from :func:`calibrated_predictions`.
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
    from .uncertainty import spearman

    out = {}
    det = opt["determined"].astype(bool) if "determined" in opt else pd.Series(False, index=opt.index)
    out["n_budgets"], out["n_determined"] = len(opt), int(det.sum())
    for col in ("raw", "calibrated"):
        d = (opt[f"{col}_idx"] - opt["observed_idx"]).abs()
        out[f"{col}_exact_agreement"] = float((d == 0).mean())
        out[f"{col}_within_one"] = float((d <= 1).mean())
        out[f"{col}_exact_agreement_determined"] = float((d[det] == 0).mean()) if det.any() else float("nan")

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


def base_losses(df: pd.DataFrame, cfg: SweepConfig) -> dict[tuple, float]:
    """(base, bucket) → the base model's test risk on the test slices of that bucket's op counts."""
    col = RISK_COLUMNS[cfg.bound.loss]
    rows = df[(df["objective"] == "base") & (df["metric"] == col)]
    out = {}
    for base, g in rows.groupby("base"):
        by_op = g.groupby("slice")["value"].mean()
        for bucket, ops in cfg.buckets.items():
            vals = [by_op[str(o)] for o in ops if str(o) in by_op]
            if vals:
                v = float(np.mean(vals))
                out[(base, bucket)] = v if cfg.bound.loss == "token_error" else 1.0 - v
    return out


def _predictor_scores(df, ct, opt, cfg, order) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts from smaller budgets and baselines, scored against the observed optimum."""
    from .forecast import held_cases, held_out_predictions, score_predictors

    held = held_out_predictions(ct, order, base_losses(df, cfg))
    if held.empty:
        return pd.DataFrame(), pd.DataFrame(columns=["base", "objective", "n", *HELD_OUT_MARKS])
    return score_predictors(held, opt), held_cases(held, opt)


def _figures(
    out: Path, df: pd.DataFrame, ct: pd.DataFrame, opt: pd.DataFrame, order: list[str], loss: str
) -> Iterator[list]:
    """Every figure family, all drawn with the one loss the config names, one family at a time
    (each is saved and closed before the next is drawn, so a large sweep holds few figures open)."""
    from . import figures as rf

    metric = RISK_COLUMNS[loss]
    yield rf.score_maps(ct, order, loss)
    yield rf.term_maps(ct, order)
    yield rf.slice_maps(df, order, metric)
    yield rf.optimum_plot(opt, order)
    yield rf.bound_vs_risk_plot(ct)
    yield rf.dft_maps(ct, order, loss)
    yield rf.bases_plot(opt, order)
    yield _irt_figures(out, order)


def _irt_figures(out: Path, order: list[str]) -> list:
    """Rate the test items by IRT over the sweep's own models (``items_irt.csv``) and draw the
    cross-difficulty maps; nothing when there are no generated answers or too few models."""
    from . import figures as rf
    from .item_difficulty import cross_difficulty, item_responses, largest_full_budget, rate_items

    try:
        responses = item_responses(out)
    except ValueError:
        return []
    if responses["subject"].nunique() < 3:
        return []
    items = rate_items(responses)
    items.to_csv(out / "items_irt.csv", index=False)
    return rf.irt_maps(largest_full_budget(cross_difficulty(responses, items), order), order)


def _save_figures(families: Iterable[list], folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    names = []
    for name, fig in (f for family in families for f in family):
        if fig.get_layout_engine() is None:  # a figure that set its own layout (e.g. a legend band) keeps it
            fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        names.append(name)
    for old in folder.glob("*.png"):  # figures of an earlier build that this one no longer draws
        if old.name not in names:
            old.unlink()
    return names


def build_report(out_dir: str | Path) -> dict:
    """Write results.{parquet,csv}, figures, summary.csv, report.md and report.html; return paths and summary."""
    from .pages import summary_lines, write_html, write_markdown

    out = Path(out_dir)
    df, cfg = collect(out)
    (out / "report").mkdir(exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    order = bucket_order(cfg)
    ct, partial = complete_budgets(cell_table(df, cfg.bound.loss), order)
    if ct.empty:
        raise ValueError("no (base, objective, n) has finished cells in every bucket yet")
    ct = ct.assign(calibrated=calibrated_predictions(ct))  # once; both tables below read it
    opt = optimum_table(ct, order)
    keep = set(map(tuple, ct[["base", "objective", "n"]].drop_duplicates().to_numpy().tolist()))
    items = {k: v for k, v in collect_items(out).items() if (k[0], k[1], int(k[2])) in keep}
    boot = bootstrap_optimum(items, cfg.bound.loss)
    if not boot.empty:
        opt = opt.merge(boot, on=["base", "objective", "n"], how="left")
    summ = summary(ct, opt)
    opt.to_csv(out / "summary.csv", index=False)
    scores, cases = _predictor_scores(df, ct, opt, cfg, order)
    scores.to_csv(out / "predictors.csv", index=False)
    cases.to_csv(out / "held_out.csv", index=False)  # every predictor's bucket per held-out budget
    fc = cases[["base", "objective", "n", *HELD_OUT_MARKS]]
    plots = _save_figures(_figures(out, df, ct, opt.merge(fc, how="left"), order, cfg.bound.loss), out / "report")
    title = f"Sweep report: {cfg.name}"
    buckets = ", ".join(f"{b} = op {cfg.buckets[b]}" for b in order)
    intro = (
        f"{ct.shape[0]} fine-tuned cells; loss for risks and bounds: {cfg.bound.loss} (in [0, 1]); "
        f"buckets (easy → hard): {buckets}."
    )
    if partial:
        intro += f" Left out until every bucket has a finished cell: {', '.join(partial)}."
    lines = summary_lines(summ, len(opt))
    write_markdown(out / "report.md", title, intro, opt, lines, plots, scores)
    write_html(out / "report.html", title, intro, opt, lines, [out / "report" / p for p in plots], scores)
    return {
        "summary": summ,
        "optimum": opt,
        "predictors": scores,
        "cells": ct,
        "plots": [str(out / "report" / p) for p in plots],
        "report_md": str(out / "report.md"),
        "report_html": str(out / "report.html"),
        "table": str(out / "results.parquet"),
    }
