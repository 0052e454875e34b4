"""Difficulty measures of training/test examples.

- ``op_count``: the iGSM operation count (exact, from the generator's metadata);
- ``cot_length``: reference chain-of-thought length in tokens (tokenizer or whitespace);
- ``base_nll``: the base model's mean per-token NLL of the reference response (nats; model-relative);
- ``base_pass_rate``: fraction of k sampled base-model answers the verifier accepts (model-relative);
- IRT difficulty: :func:`pacbayes_sft.estimators.fit_irt` over many models' correctness.

Bucketing lives in :mod:`pacbayes_sft.data.buckets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import defaults
from ..data.loaders import example_field as _field
from ..data.scorers import Judge
from ..lm.scoring import generate_texts, teacher_forced_metrics


def op_count(examples: Sequence[Any]) -> np.ndarray:
    """The ``op`` (or ``difficulty``) field of each example."""
    out = []
    for i, e in enumerate(examples):
        try:
            out.append(_field(e, "op"))
        except ValueError:
            try:
                out.append(_field(e, "difficulty"))
            except ValueError:
                raise ValueError(f"example {i} has no 'op' or 'difficulty' field") from None
    return np.asarray(out, dtype=float)


def cot_length(examples: Sequence[Any], tokenizer=None) -> np.ndarray:
    """Tokens in each reference response (the tokenizer's count, or whitespace words)."""
    responses = [_field(e, "response") for e in examples]
    if tokenizer is None:
        return np.asarray([len(r.split()) for r in responses], dtype=float)
    ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    return np.asarray([len(x) for x in ids], dtype=float)


def base_nll(model, tokenizer, examples: Sequence[Any], *, batch_size: int = defaults.BATCH_SIZE) -> np.ndarray:
    """Base model's mean per-token NLL (nats) of each reference response, teacher-forced."""
    prompts = [_field(e, "prompt") for e in examples]
    responses = [_field(e, "response") for e in examples]
    return np.asarray(teacher_forced_metrics(model, tokenizer, prompts, responses, batch_size=batch_size)["nll"])


def base_pass_rate(
    model,
    tokenizer,
    examples: Sequence[Any],
    judge: Judge,
    *,
    k: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    seed: int = 0,
    batch_size: int = defaults.BATCH_SIZE,
) -> np.ndarray:
    """Fraction of k temperature samples per example that ``judge(example, output)`` accepts."""
    import torch

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    prompts = [_field(e, "prompt") for e in examples]
    passes = np.zeros(len(prompts))
    torch.manual_seed(seed)
    model.eval()
    for _ in range(k):
        outs = generate_texts(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature
        )
        passes += [bool(judge(e, o)) for e, o in zip(examples, outs)]
    return passes / k


def irt_difficulty_report(irt_result, measures: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Spearman correlation of fitted IRT item difficulty with other measures (aligned with items)."""
    from scipy.stats import spearmanr

    out = {}
    for name, vals in measures.items():
        v = np.asarray(vals, dtype=float)
        if v.shape != irt_result.difficulty.shape:
            raise ValueError(
                f"measure {name!r} has {v.size} values, the IRT fit has {irt_result.difficulty.size} items"
            )
        out[name] = float(spearmanr(irt_result.difficulty, v)[0])
    return out
