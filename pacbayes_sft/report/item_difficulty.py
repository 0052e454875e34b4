"""Test-item difficulty rated by the sweep's own models (Kordi et al.'s method): every evaluated
model — each finished cell and each base — is a subject, every test item an item, and a 2PL IRT
model fitted to their 0/1 answers gives each item a difficulty b (logits; higher = harder).

Items are identified by (slice, position within the slice): the test set is fixed by the config,
so the k-th item of a slice is the same problem in every cell. IRT bins (quantiles of b) then
serve as test slices of a cross-difficulty map: the accuracy of each training bucket on the
items of each IRT bin.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data.buckets import bin_numbers, quantile_edges
from ..estimators.irt import fit_irt
from .table import KEYS, cell_items, complete_budgets, records


def item_responses(out_dir: str | Path) -> pd.DataFrame:
    """Long table (subject, item, slice, correct, and the subject's base, objective, n, bucket,
    seed) of every finished model's generated answers."""
    out = Path(out_dir)
    rows = []
    for rec in records(out):
        cell, it = cell_items(rec)
        it = it or {}
        if "answer_correct" not in it:
            continue
        seen: dict = {}
        who = {"subject": cell["id"]} | {k: cell[k] for k in KEYS}
        for sl, ok in zip(it["slice"], it["answer_correct"]):
            k = seen[sl] = seen.get(sl, -1) + 1
            rows.append(who | {"item": f"{sl}#{k}", "slice": str(sl), "correct": float(ok)})
    if not rows:
        raise ValueError(f"no per-item answers in {str(out)!r} (the sweep needs eval.generate: true)")
    return pd.DataFrame(rows)


def rate_items(responses: pd.DataFrame, model: str = "2pl") -> pd.DataFrame:
    """Per item: slice, IRT difficulty and discrimination, and the share of models answering it."""
    res = fit_irt(responses[["subject", "item", "correct"]], model=model)
    table = res.item_table()
    meta = responses.groupby("item").agg(slice=("slice", "first"), p_correct=("correct", "mean")).reset_index()
    return meta.merge(table, on="item").sort_values(["slice", "item"]).reset_index(drop=True)


def irt_bins(items: pd.DataFrame, k: int = 4) -> pd.Series:
    """Quantile bin 1..k' (k' ≤ k) of each item's IRT difficulty; ties stay together, and bins
    left empty by ties (e.g. many items every model answers) are dropped from the numbering."""
    raw = bin_numbers(items["difficulty"], quantile_edges(items["difficulty"], k))
    return pd.Series(raw, index=items.index).rank(method="dense").astype(int)


def cross_difficulty(responses: pd.DataFrame, items: pd.DataFrame, k: int = 4) -> pd.DataFrame:
    """Accuracy of each fine-tuned (base, objective, n, bucket) — seed mean — on each IRT bin's items."""
    binned = items.assign(irt_bin=irt_bins(items, k))[["item", "irt_bin"]]
    r = responses[responses["objective"] != "base"].merge(binned, on="item")
    keys = ["base", "objective", "n", "bucket", "irt_bin"]
    per_seed = r.groupby([*keys, "seed"])["correct"].mean().reset_index()
    return per_seed.groupby(keys)["correct"].mean().rename("accuracy").reset_index()


def largest_full_budget(cross: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The rows of :func:`cross_difficulty` at each (base, objective)'s largest budget whose every
    bucket in ``order`` has finished (the report's rule, :func:`.table.complete_budgets`):
    a map with some buckets missing would answer a different question."""
    full, _ = complete_budgets(cross, order)
    largest = full.groupby(["base", "objective"])["n"].transform("max")
    return full[full["n"] == largest].reset_index(drop=True)
