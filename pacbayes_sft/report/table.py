"""The results table: every finished cell of a run folder as tidy rows, and the per-cell views
the rest of :mod:`pacbayes_sft.report` is built on. The bottom of the package: it imports no
other report module.

Reading a cell record happens here and only here (:func:`cell_rows`, :func:`cell_items`); the
other modules see tidy rows, per-item arrays and the cell's identity (id, base, objective, n,
bucket, seed), never the record's keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..certify.config import LOSS_METRICS
from ..sweep.config import SweepConfig
from ..sweep.record import CellRecord
from ..sweep.store import FolderState, folder_config, valid_cells
from ..training.evaluate import SLICE_METRIC_NAMES

KEYS = ["base", "objective", "n", "bucket", "seed"]
# each loss's column in the per-slice rows (training.evaluate names a per-item metric per slice)
RISK_COLUMNS = {loss: SLICE_METRIC_NAMES.get(metric, metric) for loss, (metric, _) in LOSS_METRICS.items()}


# --- cell records: the one place that knows their layout -------------------------------------


def records(out_dir: str | Path, state: FolderState | None = None) -> Iterator[CellRecord]:
    """Every finished cell record of the folder valid under its current config."""
    return valid_cells(Path(out_dir), state)


def _identity(rec: CellRecord) -> dict:
    """The cell's id and its KEYS (a base model's record has no n, bucket or seed: None)."""
    return {"id": rec.id} | dict(zip(KEYS, rec.key))


def cell_rows(rec: CellRecord) -> list[dict]:
    """The record as tidy rows (KEYS, slice, metric, value, n_examples): one per test slice and
    metric, then one per bound term on the slice ``"train"`` (n_examples: the cell's n)."""
    key = {k: v for k, v in _identity(rec).items() if k != "id"}
    rows = [
        key | {"slice": str(r["slice"]), "metric": r["metric"], "value": r["value"], "n_examples": r["n_examples"]}
        for r in rec.rows
    ]
    rows += [
        key | {"slice": "train", "metric": m, "value": v, "n_examples": key["n"]}
        for m, v in rec.terms.items()
    ]
    return rows


def cell_items(rec: CellRecord) -> tuple[dict, dict | None]:
    """The cell's identity (id and KEYS) and its per-item results (lists keyed by field: slice,
    token_error, exact_match, answer_correct, …), None when the record has none."""
    return _identity(rec), rec.items or None


# --- the tables ------------------------------------------------------------------------------


def collect(out_dir: str | Path) -> tuple[pd.DataFrame, SweepConfig]:
    """Tidy table of every finished cell (any shard) and the sweep's config."""
    out = Path(out_dir)
    cfg, state = folder_config(out)
    rows = [row for rec in records(out, state) for row in cell_rows(rec)]
    if not rows:
        raise ValueError(f"no finished cells in {str(out / 'cells')!r}")
    return pd.DataFrame(rows), cfg


def collect_items(out_dir: str | Path) -> dict[tuple, dict]:
    """Per-item results of every finished fine-tuned cell, keyed by (base, objective, n, bucket, seed)."""
    items = {}
    for rec in records(out_dir):
        who, it = cell_items(rec)
        if it is not None and who["n"]:
            items[tuple(who[k] for k in KEYS)] = it
    return items


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
    t["test_risk"] = 1.0 - t[col] if LOSS_METRICS[loss][1] else t[col]
    t["n"] = t["n"].astype(int)
    return t


def bucket_order(cfg: SweepConfig) -> list[str]:
    """Buckets from easiest to hardest (by mean op count)."""
    return sorted(cfg.buckets, key=lambda b: (np.mean(cfg.buckets[b]), b))


def complete_budgets(ct: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The cells of the (base, objective, n) whose every bucket has a finished cell (a best
    bucket among the finished ones alone would be a different question), and the ones left out."""
    groups = ct.groupby(["base", "objective", "n"])["bucket"].agg(lambda b: set(order) <= set(b))
    partial = [f"{b}/{o}/n={n}" for (b, o, n), full in groups.items() if not full]
    full = groups[groups].index
    keep = ct.set_index(["base", "objective", "n"]).index.isin(full)
    return ct[keep].reset_index(drop=True), partial


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
