"""The difficulty measures of a dataset task, by name: one function each, in one registry.

A measure maps a split's examples to one number each (larger = harder); the task bins those
numbers into quantiles of the training pool. Adding a measure is one function and one line of
:data:`MEASURES` here (and its test), or, from a package of your own, :func:`register_measure`:
the config's choices, the CLI and the loader read the registry. This module stays free of torch,
so the config layer that names a measure does not load the model code; the measures that run the
base model import it when they run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import defaults
from ..data.loaders import read_rows as read_file
from ..data.scorers import answer_judge
from ..registry import check_free, pop_registered


@dataclass
class SplitData:
    """What a measure may look at: the raw rows, the (prompt, response, answer) texts, each
    response's length in tokens, the task config, the split's name (for errors), and the base
    model with its tokenizer (for the model-relative measures)."""

    rows: list[dict]
    texts: list[tuple[str, str, str]]
    n_response_tokens: list[int]
    task: Any
    source: str
    model: Any = None
    tokenizer: Any = None
    max_new_tokens: int = defaults.MAX_NEW_TOKENS


def read_rows(path: str | Path, columns: list[str]) -> list[dict]:
    """Rows of a .jsonl/.csv/.parquet file or a saved ``datasets`` folder, with ``columns`` checked."""
    rows = read_file(path)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (columns: {sorted(rows[0])})")
    return rows


def column(split: SplitData) -> list[float]:
    """A numeric column of the data (``task.difficulty_column``)."""
    name, source = split.task.difficulty_column, split.source
    if name not in split.rows[0]:
        raise ValueError(f"{source}: missing difficulty column {name!r}")
    try:
        vals = [float(r[name]) for r in split.rows]
    except (TypeError, ValueError):
        raise ValueError(f"{source}: difficulty column {name!r} must be numeric") from None
    if not np.isfinite(vals).all():
        raise ValueError(f"{source}: difficulty column {name!r} holds non-finite values")
    return vals


def cot_length(split: SplitData) -> list[float]:
    """The reference response's length in tokens of the first base's tokenizer."""
    return [float(n) for n in split.n_response_tokens]


def _examples(split: SplitData) -> list[dict]:
    if split.model is None:
        raise ValueError(f"difficulty {split.task.difficulty!r} needs the base model")
    return [{"prompt": p, "response": r, "answer": a} for p, r, a in split.texts]


def base_nll(split: SplitData) -> list[float]:
    """The base model's mean per-token NLL of the reference response (nats), teacher-forced."""
    from ..estimators.difficulty import base_nll as nll  # deferred: torch, only when the base is scored

    return nll(split.model, split.tokenizer, _examples(split)).tolist()


def base_pass_rate(split: SplitData) -> list[float]:
    """1 − the base model's pass rate over 4 samples at temperature 1 (judged by the task's scorer)."""
    from ..estimators.difficulty import base_pass_rate as rate  # deferred: torch, only when the base is scored

    judge = answer_judge(split.task.scorer)
    return (1.0 - rate(split.model, split.tokenizer, _examples(split), judge, k=4, max_new_tokens=split.max_new_tokens)).tolist()


def irt_difficulty(responses_path: str | Path, model: str = "2pl") -> dict[str, float]:
    """Item → IRT difficulty b (logits) fitted to a (subject, item, correct) table of answers.
    The fit is cached per file version: the pool and the test split rate against the same table."""
    st = Path(responses_path).stat()
    return dict(_irt_fit(str(responses_path), st.st_mtime_ns, st.st_size, model))


@functools.lru_cache(maxsize=4)
def _irt_fit(path: str, _mtime_ns: int, _size: int, model: str) -> tuple[tuple[str, float], ...]:
    from ..estimators.irt import fit_irt  # deferred: the estimators package loads torch

    table = pd.DataFrame(read_rows(path, ["subject", "item", "correct"]))[["subject", "item", "correct"]]
    res = fit_irt(table.astype({"item": str}), model=model)
    return tuple(zip(map(str, res.items), map(float, res.difficulty)))


def irt(split: SplitData) -> list[float]:
    """IRT difficulty of each example's item (``task.item_column``) from ``task.irt_responses``."""
    task, rows, source = split.task, split.rows, split.source
    if task.item_column not in rows[0]:
        raise ValueError(f"{source}: missing item column {task.item_column!r} (task.item_column)")
    b = irt_difficulty(task.irt_responses)
    missing = sum(str(r[task.item_column]) not in b for r in rows)
    if missing:
        raise ValueError(f"{source}: {missing} of {len(rows)} examples have no rating in {task.irt_responses}")
    return [b[str(r[task.item_column])] for r in rows]


MEASURES: dict[str, Callable[[SplitData], list[float]]] = {
    "column": column,
    "cot_length": cot_length,
    "base_nll": base_nll,
    "base_pass_rate": base_pass_rate,
    "irt": irt,
}
"""Every difficulty measure by name (the choices of ``task.difficulty``)."""

NEEDS_BASE = {"base_nll", "base_pass_rate"}
"""The measures that score examples with the first base model."""

_BUILT_IN = frozenset(MEASURES)


def register_measure(
    name: str, fn: Callable[[SplitData], list[float]], *, needs_base: bool = False, replace: bool = False
) -> Callable[[SplitData], list[float]]:
    """Add the difficulty measure ``fn(split) -> one number per example (larger = harder)`` to
    :data:`MEASURES` (and to :data:`NEEDS_BASE` when it scores with the first base model, which the
    task then loads into ``split.model``). The config's ``task.difficulty`` accepts ``name`` from
    then on, and the dataset loader bins by it. ValueError when ``name`` is taken (unless
    ``replace``; a built-in measure is never replaced). Returns ``fn``."""
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"name must be an identifier (the value of task.difficulty), got {name!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a callable fn(split) -> list[float], got {fn!r}")
    if not isinstance(needs_base, bool):
        raise ValueError(f"needs_base must be a bool, got {needs_base!r}")
    check_free(MEASURES, name, built_in=_BUILT_IN, kind="difficulty measure", replace=replace)
    MEASURES[name] = fn
    NEEDS_BASE.discard(name)  # a replaced measure may no longer need the base
    if needs_base:
        NEEDS_BASE.add(name)
    return fn


def unregister_measure(name: str) -> Callable[[SplitData], list[float]]:
    """Remove and return the measure registered as ``name`` (ValueError for an unknown or built-in name)."""
    fn = pop_registered(MEASURES, name, built_in=_BUILT_IN, kind="difficulty measure")
    NEEDS_BASE.discard(name)
    return fn
