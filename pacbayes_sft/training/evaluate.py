"""Evaluation by difficulty slice, as tidy rows (model, slice, metric, value, n_examples).

Metrics per example, averaged per slice:

- ``exact_match``: teacher-forced — every response token is the argmax given the reference
  prefix. One forward pass; equal to "greedy decoding reproduces the reference".
- ``token_error``: fraction of response tokens whose argmax is wrong (a loss in [0, 1]).
- ``nll``: mean response-token negative log-likelihood (nats).
- ``smoothed_nll``: mean of −ln((1−α)p + α/V), bounded in [0, ln(1 + (1−α)V/α)].
- ``answer_accuracy``: batched greedy generation with a KV cache, checked by the task's judge
  (only when a judge is given; :func:`~pacbayes_sft.lm.generation.generate_and_judge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import defaults
from ..data.loaders import example_field
from ..data.scorers import Judge
from ..lm.generation import generate_and_judge, judge_texts
from ..lm.scoring import greedy_generate, teacher_forced_metrics, teacher_forced_role_errors

__all__ = ["evaluate_slices", "greedy_generate", "teacher_forced_metrics", "teacher_forced_role_errors"]


def evaluate_items(
    model,
    tokenizer,
    slices: Mapping[Any, Sequence[Any]],
    *,
    judge: Judge | None = None,
    generate: bool = True,
    batch_size: int = defaults.BATCH_SIZE,
    alpha: float = 0.01,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    outputs: Sequence[str] | None = None,
) -> dict[str, list]:
    """Per-item results, as columns: ``slice`` and one list per metric (``answer_correct`` is
    0/1 and present only with a judge and ``generate``). Items keep their order within slices.
    ``outputs``: the model's greedy generations already computed, one per item in slice order
    (they are judged instead of generated again)."""
    cols: dict[str, list] = {"slice": []}
    model.eval()
    total = sum(len(v) for v in slices.values())
    if outputs is not None and len(outputs) != total:
        raise ValueError(f"outputs must hold one generation per item ({total}), got {len(outputs)}")
    done = 0
    for label, examples in slices.items():
        if not examples:
            raise ValueError(f"slice {label!r} has no examples")
        prompts = [example_field(e, "prompt") for e in examples]
        responses = [example_field(e, "response") for e in examples]
        tf = teacher_forced_metrics(model, tokenizer, prompts, responses, batch_size=batch_size, alpha=alpha)
        if generate and judge is not None and outputs is None:
            judged = generate_and_judge(
                model, tokenizer, examples, judge, max_new_tokens=max_new_tokens, batch_size=batch_size, by_length=True
            )
            tf["answer_correct"] = [float(c) for c in judged.correct]
        elif generate and judge is not None:
            tf["answer_correct"] = [float(c) for c in judge_texts(examples, outputs[done : done + len(prompts)], judge)]
        done += len(prompts)
        cols["slice"] += [label] * len(prompts)
        for metric, vals in tf.items():
            cols.setdefault(metric, []).extend(vals)
    return cols


SLICE_METRIC_NAMES = {"answer_correct": "answer_accuracy"}
"""A per-item metric's name in the per-slice rows, where it differs (a 0/1 success → an accuracy)."""


def slice_rows(items: Mapping[str, list], model_name: str = "model") -> list[dict]:
    """Tidy rows (model, slice, metric, value, n_examples) averaging :func:`evaluate_items` per slice;
    ``answer_correct`` is reported as ``answer_accuracy``."""
    rows = []
    labels = list(dict.fromkeys(items["slice"]))
    for label in labels:
        idx = [i for i, s in enumerate(items["slice"]) if s == label]
        for metric, vals in items.items():
            if metric == "slice":
                continue
            name = SLICE_METRIC_NAMES.get(metric, metric)
            value = sum(vals[i] for i in idx) / len(idx)
            rows.append({"model": model_name, "slice": label, "metric": name, "value": value, "n_examples": len(idx)})
    return rows


def evaluate_slices(
    model,
    tokenizer,
    slices: Mapping[Any, Sequence[Any]],
    *,
    model_name: str = "model",
    judge: Judge | None = None,
    generate: bool = True,
    batch_size: int = defaults.BATCH_SIZE,
    alpha: float = 0.01,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
) -> list[dict]:
    """Tidy rows of every metric for each slice.

    ``slices`` maps a slice label (e.g. an op count) to examples with ``.prompt`` and ``.response``
    attributes (or dicts with those keys). ``judge(example, output) -> bool`` checks an answer.
    """
    items = evaluate_items(
        model,
        tokenizer,
        slices,
        judge=judge,
        generate=generate,
        batch_size=batch_size,
        alpha=alpha,
        max_new_tokens=max_new_tokens,
    )
    return slice_rows(items, model_name)
