"""The dataset task's data: your (prompt, response, answer) files, binned by difficulty.

- ``dataset``: your (prompt, response, answer) files. The difficulty is a column or the reference
  response's length in tokens (``cot_length``); bins are quantiles of the training pool (or fixed
  edges), and test examples are binned with the same edges. The judge is a scorer from
  :mod:`pacbayes_sft.data.scorers`. Examples longer than the model's context are dropped and
  counted, never truncated.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.buckets import bin_numbers, quantile_edges
from ..data.loaders import read_rows as read_file
from ..data.scorers import answer_judge
from ..estimators.difficulty import base_nll, base_pass_rate
from ..estimators.irt import fit_irt

log = logging.getLogger("pacbayes_sft")


@dataclass(frozen=True)
class Example:
    """One (prompt, response, answer) example of a dataset task. ``op`` is its difficulty bin
    (1-based; the key of buckets and test slices, as the op count is for iGSM)."""

    prompt: str
    response: str
    answer: str
    op: int
    difficulty: float


@dataclass
class DatasetSplit:
    """A binned split, the bin edges (nats or tokens, as the difficulty) and what was dropped."""

    examples: list[Example]
    edges: list[float]
    dropped_too_long: int


def read_rows(path: str | Path, columns: Sequence[str]) -> list[dict]:
    """Rows of a .jsonl/.csv/.parquet file or a saved ``datasets`` folder, with ``columns`` checked."""
    rows = read_file(path)
    if not rows:
        raise ValueError(f"{path} holds no examples")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (columns: {sorted(rows[0])})")
    return rows


def _texts(rows: list[dict], task: Any, tokenizer: Any, source: str) -> list[tuple[str, str, str]]:
    out = []
    for i, r in enumerate(rows):
        vals = [r.get(task.prompt_column), r.get(task.response_column), r.get(task.answer_column)]
        if not all(isinstance(v, str) and v.strip() for v in vals[:2]) or vals[2] is None:
            raise ValueError(f"{source}: row {i} needs a non-empty prompt, response and answer")
        prompt = vals[0]
        if task.chat_template:
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("task.chat_template is set but the tokenizer has no chat template")
            msgs = [{"role": "user", "content": prompt}]
            prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append((prompt, vals[1], str(vals[2])))
    return out


def irt_difficulty(responses_path: str | Path, model: str = "2pl") -> dict[str, float]:
    """Item → IRT difficulty b (logits) fitted to a (subject, item, correct) table of answers.
    The fit is cached per file version: the pool and the test split rate against the same table."""
    st = Path(responses_path).stat()
    return dict(_irt_fit(str(responses_path), st.st_mtime_ns, st.st_size, model))


@functools.lru_cache(maxsize=4)
def _irt_fit(path: str, _mtime_ns: int, _size: int, model: str) -> tuple[tuple[str, float], ...]:
    table = pd.DataFrame(read_rows(path, ["subject", "item", "correct"]))[["subject", "item", "correct"]]
    res = fit_irt(table.astype({"item": str}), model=model)
    return tuple(zip(map(str, res.items), map(float, res.difficulty)))


def _model_difficulty(texts, task: Any, model: Any, tokenizer: Any, max_new_tokens: int) -> list[float]:
    """base_nll (nats per response token) or 1 − base pass rate, from the base model itself."""
    if model is None:
        raise ValueError(f"difficulty {task.difficulty!r} needs the base model")
    ex = [{"prompt": p, "response": r, "answer": a} for p, r, a in texts]
    if task.difficulty == "base_nll":
        return base_nll(model, tokenizer, ex).tolist()
    rate = base_pass_rate(model, tokenizer, ex, answer_judge(task.scorer), k=4, max_new_tokens=max_new_tokens)
    return (1.0 - rate).tolist()


def _difficulty(rows: list[dict], texts, task: Any, n_response_tokens: list[int], source: str, **model) -> list[float]:
    if task.difficulty == "cot_length":
        return [float(n) for n in n_response_tokens]
    if task.difficulty in ("base_nll", "base_pass_rate"):
        return _model_difficulty(texts, task, **model)
    if task.difficulty == "irt":
        if task.item_column not in rows[0]:
            raise ValueError(f"{source}: missing item column {task.item_column!r} (task.item_column)")
        b = irt_difficulty(task.irt_responses)
        missing = sum(str(r[task.item_column]) not in b for r in rows)
        if missing:
            raise ValueError(f"{source}: {missing} of {len(rows)} examples have no rating in {task.irt_responses}")
        return [b[str(r[task.item_column])] for r in rows]
    if task.difficulty_column not in rows[0]:
        raise ValueError(f"{source}: missing difficulty column {task.difficulty_column!r}")
    try:
        vals = [float(r[task.difficulty_column]) for r in rows]
    except (TypeError, ValueError):
        raise ValueError(f"{source}: difficulty column {task.difficulty_column!r} must be numeric") from None
    if not np.isfinite(vals).all():
        raise ValueError(f"{source}: difficulty column {task.difficulty_column!r} holds non-finite values")
    return vals


def load_split(
    path: str | Path,
    task: Any,
    tokenizer: Any,
    max_tokens: int,
    edges: list[float] | None = None,
    *,
    model: Any = None,
    max_new_tokens: int = 256,
):
    """Read, judge lengths, measure difficulty and bin one split (edges: from this split's
    quantiles when None, unless the task fixes them). ``model``: the base, for base_nll and
    base_pass_rate."""
    cols = [task.prompt_column, task.response_column, task.answer_column]
    rows = read_rows(path, cols)
    texts = _texts(rows, task, tokenizer, str(path))
    p_ids = tokenizer([t[0] for t in texts], add_special_tokens=False)["input_ids"]
    r_ids = tokenizer([t[1] for t in texts], add_special_tokens=False)["input_ids"]
    diff = _difficulty(
        rows,
        texts,
        task,
        [len(r) for r in r_ids],
        str(path),
        model=model,
        tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
    )
    # <bos> prompt response <eos> must fit the context: drop (and count) what does not.
    fits = [2 + len(p) + len(r) <= max_tokens for p, r in zip(p_ids, r_ids)]
    dropped = fits.count(False)
    if dropped:
        log.warning(
            "%s: dropped %d of %d examples longer than the context (%d tokens)", path, dropped, len(rows), max_tokens
        )
    kept = [i for i, f in enumerate(fits) if f]
    if not kept:
        raise ValueError(f"{path}: every example is longer than the model's context ({max_tokens} tokens)")
    if edges is None:
        edges = list(task.edges) if task.edges else quantile_edges([diff[i] for i in kept], task.bins)
    bins = bin_numbers([diff[i] for i in kept], edges)
    ex = [Example(*texts[i], op=int(b), difficulty=diff[i]) for i, b in zip(kept, bins)]
    return DatasetSplit(ex, [float(e) for e in edges], dropped)


def draw_train(pool: list[Example], bins: Sequence[int], n: int, seed: int, bucket: str) -> list[Example]:
    """The first n of a seeded shuffle of the pool's examples in ``bins`` (nested across budgets)."""
    cand = [e for e in pool if e.op in set(bins)]
    if len(cand) < n:
        raise ValueError(
            f"bucket {bucket!r} (bins {list(bins)}) holds {len(cand)} training examples, fewer than n = {n}"
        )
    random.Random(f"pool:{seed}:{bucket}").shuffle(cand)
    return cand[:n]


def cap_slices(test: list[Example], bins: Sequence[int], per_bin: int, seed: int) -> list[Example]:
    """At most ``per_bin`` test examples of each bin in ``bins`` (a seeded shuffle within each)."""
    out = []
    for b in bins:
        members = [e for e in test if e.op == b]
        if not members:
            raise ValueError(f"test bin {b} is empty (test.ops lists bins 1..k of the difficulty)")
        random.Random(f"test:{seed}:{b}").shuffle(members)
        out += members[:per_bin]
    return out
