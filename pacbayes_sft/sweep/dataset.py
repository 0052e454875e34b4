"""The dataset task's data: your (prompt, response, answer) files, binned by difficulty.

Each example gets a difficulty from a measure of :mod:`pacbayes_sft.sweep.difficulty` (a column,
the reference response's length in tokens, the base model's loss or pass rate, or IRT); bins are
quantiles of the training pool (or fixed edges), and test examples are binned with the same
edges. Examples longer than the model's context are dropped and counted, never truncated.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..data.buckets import bin_numbers, quantile_edges
from .difficulty import MEASURES, SplitData, read_rows

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


def load_split(
    path: str | Path,
    task: Any,
    tokenizer: Any,
    max_tokens: int,
    edges: list[float] | None = None,
    *,
    model: Any = None,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
) -> DatasetSplit:
    """Read, judge lengths, measure difficulty and bin one split (edges: from this split's
    quantiles when None, unless the task fixes them). ``model``: the base, for base_nll and
    base_pass_rate."""
    cols = [task.prompt_column, task.response_column, task.answer_column]
    rows = read_rows(path, cols)
    texts = _texts(rows, task, tokenizer, str(path))
    p_ids = tokenizer([t[0] for t in texts], add_special_tokens=False)["input_ids"]
    r_ids = tokenizer([t[1] for t in texts], add_special_tokens=False)["input_ids"]
    split = SplitData(rows, texts, [len(r) for r in r_ids], task, str(path), model, tokenizer, max_new_tokens)
    diff = MEASURES[task.difficulty](split)
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


def shuffled_bin(test: list[Example], b: int, seed: int) -> list[Example]:
    """The examples of bin ``b`` in their seeded shuffle order (the order every draw of a bin uses)."""
    members = [e for e in test if e.op == b]
    if not members:
        raise ValueError(f"test bin {b} is empty (test.ops lists bins 1..k of the difficulty)")
    random.Random(f"test:{seed}:{b}").shuffle(members)
    return members


def cap_slices(test: list[Example], bins: Sequence[int], per_bin: int, seed: int) -> list[Example]:
    """At most ``per_bin`` test examples of each bin in ``bins`` (a seeded shuffle within each)."""
    return [e for b in bins for e in shuffled_bin(test, b, seed)[:per_bin]]


class PoolUsedUp(ValueError):
    """A race asked for more fresh test rows of a bin than the test file has left."""


def fresh_rows(test: list[Example], bins: Sequence[int], per_bin: int, seed: int, round_: int, n_items: int) -> list[Example]:
    """Round ``round_`` ≥ 1 of a race on a dataset task: the test rows after the committed ``per_bin``
    of each bin, in the same shuffle, ⌊k/K⌋ or ⌈k/K⌉ a bin (the first k mod K bins one more) for
    k = ``n_items``, disjoint across rounds; PoolUsedUp naming the bin when it has too few left."""
    q, r = divmod(n_items, len(bins))
    out = []
    for i, b in enumerate(bins):
        k = q + (i < r)
        start = per_bin + (round_ - 1) * k
        rows = shuffled_bin(test, b, seed)[start : start + k]
        if len(rows) < k:
            left = max(0, len(shuffled_bin(test, b, seed)) - start)
            raise PoolUsedUp(f"test pool used up: bin {b} has {left} unused test row(s), round {round_} needs {k}")
        out += rows
    return out
