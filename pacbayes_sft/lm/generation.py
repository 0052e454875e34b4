"""Generate greedily, then judge: a model's answers to examples and whether each is right.

Every place that asks "what does the model answer, and is it correct?" goes through
:func:`generate_and_judge`: the answer_error losses of a certificate
(:func:`~pacbayes_sft.certify.losses.answer_losses`), the answers and confidences the label-free
estimators read (:func:`~pacbayes_sft.estimators.answers.collect_answers`) and evaluation by slice
(:func:`~pacbayes_sft.training.evaluate.evaluate_items`). An answer is the greedy continuation of
``<bos> prompt`` (:func:`~pacbayes_sft.lm.decoding.greedy`), decoded to text without special
tokens; a :data:`~pacbayes_sft.data.scorers.Judge` ``(item, text) -> bool`` says whether it is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .. import defaults
from ..data.loaders import example_field
from ..data.scorers import Judge
from .decoding import greedy
from .scoring import prompt_token_ids


class Judged(NamedTuple):
    """Per item, in input order: the generated ``texts``, whether the judge accepts each
    (``correct``; None without a judge), the generated ``tokens`` (``<eos>`` kept when emitted),
    and how many rows needed decoding beyond a reference check (``decoded``)."""

    texts: list[str]
    correct: list[bool] | None
    tokens: list[list[int]]
    decoded: int


def item_prompts(items: Sequence[Any]) -> list[str]:
    """The prompt of each item: the item itself when it is a string, else its ``prompt`` field."""
    return [x if isinstance(x, str) else example_field(x, "prompt") for x in items]


def judge_texts(items: Sequence[Any], texts: Sequence[str], judge: Judge | None) -> list[bool] | None:
    """``judge(item, text)`` as a bool for each pair (None when ``judge`` is None)."""
    if judge is not None and not callable(judge):
        raise ValueError(f"judge must be a callable (item, text) -> bool or None, got {judge!r}")
    if len(texts) != len(items):
        raise ValueError(f"texts must hold one text per item ({len(items)}), got {len(texts)}")
    return None if judge is None else [bool(judge(x, t)) for x, t in zip(items, texts)]


def judge_tokens(tokenizer: Any, items: Sequence[Any], tokens: Sequence[Sequence[int]], judge: Judge | None) -> Judged:
    """Judge continuations already generated (token ids): decoded without special tokens, then
    :func:`judge_texts`; ``decoded`` is 0."""
    tokens = [list(t) for t in tokens]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
    return Judged(texts, judge_texts(items, texts, judge), tokens, 0)


@torch.no_grad()
def generate_and_judge(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Any],
    judge: Judge | None,
    *,
    references: Sequence[Sequence[int] | None] | None = None,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int | None = None,
    by_length: bool = False,
) -> Judged:
    """Each item's greedy answer under ``model`` and whether ``judge`` accepts it.

    Args:
        items: prompt strings, or examples with a ``prompt`` (and whatever ``judge`` reads).
        judge: a :data:`~pacbayes_sft.data.scorers.Judge`; None generates only (``correct`` None).
        references: per item, a candidate greedy answer (token ids) to check in one teacher-forced
            pass, or None; the answers are plain greedy decoding's either way
            (:func:`~pacbayes_sft.lm.decoding.greedy`).
        prompt_ids: the items' ``<bos> prompt`` token ids when the caller already has them
            (:func:`~pacbayes_sft.lm.scoring.prompt_token_ids`); default: encoded here.
        batch_size, by_length: batching of :func:`~pacbayes_sft.lm.decoding.greedy` (None: one
            batch; item i is row i of it, so per-row posterior draws apply).
    """
    items = list(items)
    if judge is not None and not callable(judge):
        raise ValueError(f"judge must be a callable (item, text) -> bool or None, got {judge!r}")
    if prompt_ids is None:
        prompt_ids = prompt_token_ids(tokenizer, item_prompts(items)) if items else []
    elif len(prompt_ids) != len(items):
        raise ValueError(f"prompt_ids must hold one token list per item ({len(items)}), got {len(prompt_ids)}")
    out = greedy(
        model, prompt_ids, reference=references, max_new_tokens=max_new_tokens, batch_size=batch_size,
        by_length=by_length, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return judge_tokens(tokenizer, items, out.tokens, judge)._replace(decoded=out.decoded)
