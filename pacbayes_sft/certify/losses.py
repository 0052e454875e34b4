"""The bounded losses in [0, 1] a certificate is computed from, on a list of examples.

- token_error: the mean over response tokens of 1 − [the teacher-forced argmax is the token];
- sequence_error: 1 − [every response token is the teacher-forced argmax];
- answer_error: 1 − judge(example, greedy generation), in {0, 1}; a judge is a
  :data:`~pacbayes_sft.data.scorers.Judge` ``(example, text) -> bool``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import defaults
from ..data.loaders import example_field
from ..data.scorers import Judge, answer_judge
from ..lm.decoding import complete_continuation, greedy
from ..lm.encoding import encode
from ..lm.generation import generate_and_judge, judge_tokens
from ..lm.scoring import prompt_token_ids, teacher_forced_metrics
from .config import EvalConfig, item_losses


@dataclass
class Losses:
    """A bounded loss on the n training examples: the mean risk of a model, one example's loss,
    and (optionally) ``batch(model, [i_1, …, i_B])``: the losses of those examples from one batch
    whose row r is example i_r, which lets per-row posterior draws score B examples per pass."""

    n: int
    risk: Callable[[torch.nn.Module], float]
    example: Callable[[torch.nn.Module, int], float]
    batch: Callable[[torch.nn.Module, list[int]], list[float]] | None = None
    batch_size: int = defaults.BATCH_SIZE
    point_risk: Callable[..., float] | None = None
    outputs: dict[int, list[int]] | None = None  # answer_error: the mean's greedy tokens per example, once point() ran
    stats: dict = dataclasses.field(default_factory=dict)

    def point(self, model: torch.nn.Module, proved: Mapping[int, list[int]] | None = None) -> float:
        """The risk of the posterior mean ``model``; losses that can reuse its outputs under nearby
        posterior draws (answer_error: its greedy generations) keep them.

        ``proved`` (answer_error only): example index → the greedy answer of *this* model that a
        teacher-forced pass of it has already proved (every token, ``<eos>`` included, the
        argmax after its prefix: a reference it matches exactly, cut at ``max_new_tokens``).
        Those rows are taken as given and not decoded again."""
        if not proved:
            return (self.point_risk or self.risk)(model)
        if self.outputs is None or self.point_risk is None:
            raise ValueError("proved: only answer_error losses (which generate answers) take proved answers")
        bad = [i for i in proved if not (isinstance(i, int) and 0 <= i < self.n)]
        if bad:
            raise ValueError(f"proved: example index {bad[0]!r} is not in 0..{self.n - 1}")
        return self.point_risk(model, proved)


def prompts_and_responses(examples: Sequence[Any], what: str = "examples") -> tuple[list[str], list[str]]:
    """The ``prompt`` and ``response`` strings of ``examples`` (dicts or objects); ValueError names ``what``."""
    fields = []
    for name in ("prompt", "response"):
        vals = [example_field(e, name) for e in examples]
        if not all(isinstance(v, str) for v in vals):
            raise ValueError(f"{what} need a string {name!r}")
        fields.append(vals)
    return fields[0], fields[1]


def _losses_from_batch(n: int, batch: Callable, batch_size: int) -> Losses:
    """Losses whose risk and single-example loss both go through ``batch``."""

    def risk(mdl: torch.nn.Module) -> float:
        chunks = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
        return float(sum(sum(batch(mdl, c)) for c in chunks) / n)

    return Losses(n=n, risk=risk, example=lambda mdl, i: batch(mdl, [i])[0], batch=batch, batch_size=batch_size)


def teacher_forced_losses(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    loss: str,
    *,
    batch_size: int = defaults.BATCH_SIZE,
    per_row_draws: bool = False,
) -> Losses:
    """Token error or sequence error (1 − teacher-forced exact match), both in [0, 1].
    ``per_row_draws=True`` exposes the batched loss for per-row posterior draws (slower here)."""
    if loss not in ("token_error", "sequence_error"):
        raise ValueError(f"loss must be 'token_error' or 'sequence_error' for teacher forcing, got {loss!r}")

    def batch(mdl: torch.nn.Module, idx: list[int]) -> list[float]:
        ps, rs = [prompts[i] for i in idx], [responses[i] for i in idx]
        tf = teacher_forced_metrics(mdl, tokenizer, ps, rs, batch_size=len(idx), keep_order=True)
        return item_losses(loss, tf).tolist()

    # One teacher-forced pass per example is cheap: per-row draws only pay off with generation
    # (benchmarks/bench_mc_draws.py: 0.8x here, 11x for answer_error), so MC stays one at a time.
    losses = _losses_from_batch(len(prompts), batch, batch_size)
    return losses if per_row_draws else dataclasses.replace(losses, batch=None)


def gold_references(tokenizer: Any, examples: Sequence[Any], max_new_tokens: int) -> list[list[int]] | None:
    """Each example's reference response as a candidate greedy continuation: its tokens and
    ``<eos>`` (as training encodes them), cut at the first ``<eos>`` and at ``max_new_tokens``. None when an example has no
    non-empty string ``response``. A model fine-tuned on such data usually writes exactly this,
    so :func:`~pacbayes_sft.lm.decoding.greedy` checks it in one pass."""
    try:
        prompts, responses = prompts_and_responses(examples)
    except (ValueError, KeyError, AttributeError):
        return None
    if not prompts or not all(r.strip() for r in responses):
        return None
    try:
        enc = encode(tokenizer, prompts, responses)
    except ValueError:  # a response with no token
        return None
    eos = tokenizer.eos_token_id
    refs = [e.ids[e.prompt_len :] for e in enc]
    # a response whose text holds the <eos> token: greedy decoding stops at its first one
    return [r[: r.index(eos) + 1][:max_new_tokens] for r in refs]


def proved_by_teacher_forcing(
    tokenizer: Any, examples: Sequence[Any], exact_match: Sequence[float], max_new_tokens: int
) -> dict[int, list[int]]:
    """The greedy answers a teacher-forced pass has already proved, for :meth:`Losses.point`:
    where ``exact_match[i]`` = 1 (every response token and ``<eos>`` is the argmax after its
    reference prefix), greedy decoding writes the reference, so example i's answer is its
    :func:`gold_references` entry (cut at ``max_new_tokens``, as decoding would be)."""
    if len(exact_match) != len(examples):
        raise ValueError(f"exact_match must have one value per example ({len(examples)}), got {len(exact_match)}")
    gold = gold_references(tokenizer, examples, max_new_tokens)
    if gold is None:
        return {}
    return {i: gold[i] for i, m in enumerate(exact_match) if m == 1.0}


def _checked_proved(proved: Mapping[int, list[int]] | None, max_new_tokens: int, eos: int) -> dict[int, list[int]]:
    """``proved`` as a dict, each answer checked to be a whole greedy answer: <eos> only at its
    end, or ``max_new_tokens`` long without one."""
    tokens = {i: list(t) for i, t in (proved or {}).items()}
    for i, t in tokens.items():
        if not complete_continuation(t, max_new_tokens, eos):
            raise ValueError(
                f"proved: the answer of example {i} is not a complete greedy answer "
                f"(<eos> only at its end, or {max_new_tokens} tokens without one)"
            )
    return tokens


def answer_losses(
    tokenizer: Any,
    examples: Sequence[Any],
    judge: Judge,
    *,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
    gold: bool = False,
) -> Losses:
    """answer_error: 1 − judge(example, greedy generation), in {0, 1}.

    ``judge`` is a :data:`~pacbayes_sft.data.scorers.Judge` (a task's verifier, or
    :func:`~pacbayes_sft.data.scorers.answer_judge` of a scorer). Under a posterior, each row of a
    generation batch decodes under its own draw (``GaussianPosterior.sample_rows``), so the
    per-example scheme stays affordable.

    Greedy answers are computed by :func:`~pacbayes_sft.lm.generation.generate_and_judge`, which
    checks a candidate answer wherever one is known: one teacher-forced pass checks it, and only
    rows whose argmax departs from it are decoded on from the first departure, so the losses are
    those of plain greedy decoding. The posterior mean's answers (:meth:`Losses.point`), once
    computed, are kept, and every batch under any model is checked against them. ``gold=True``:
    the posterior mean's answers are first checked against the examples' own responses
    (:func:`gold_references`), which pays on training examples (a fine-tuned model mostly writes
    them) and not on test items it often gets wrong (a row that departs early still costs its
    decoding steps). ``stats`` counts the rows scored and those that needed decoding.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not callable(judge):
        raise ValueError(f"judge must be a callable (example, text) -> bool, got {judge!r}")
    examples = list(examples)
    n = len(examples)
    prompt_ids = prompt_token_ids(tokenizer, [example_field(e, "prompt") for e in examples]) if examples else []
    gold_refs = gold_references(tokenizer, examples, max_new_tokens) if gold else None
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    reference: dict[int, list[int]] = {}  # the posterior mean's greedy tokens, once point() ran
    stats = {"rows": 0, "rows_decoded": 0, "point_rows": 0, "point_rows_decoded": 0}

    def batch(mdl: torch.nn.Module, idx: list[int]) -> list[float]:
        """Row r is example idx[r]; each row is checked against the mean's answer once it is known."""
        judged = generate_and_judge(
            mdl, tokenizer, [examples[i] for i in idx], judge, references=[reference.get(i) for i in idx],
            prompt_ids=[prompt_ids[i] for i in idx], max_new_tokens=max_new_tokens,
        )  # fmt: skip
        stats["rows"] += len(idx)
        stats["rows_decoded"] += judged.decoded
        return [0.0 if c else 1.0 for c in judged.correct]

    def point_risk(mdl: torch.nn.Module, proved: Mapping[int, list[int]] | None = None) -> float:
        tokens = _checked_proved(proved, max_new_tokens, eos)
        rest = [i for i in range(n) if i not in tokens]
        # kept answers from an earlier call are checked (the same tokens, if the same model); else the gold ones
        refs = [reference[i] for i in range(n)] if len(reference) == n else gold_refs
        out = greedy(
            mdl, [prompt_ids[i] for i in rest], reference=None if refs is None else [refs[i] for i in rest],
            max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, batch_size=batch_size, by_length=True,
        )  # fmt: skip
        tokens.update(zip(rest, out.tokens))
        stats["point_rows"] += n
        stats["point_rows_decoded"] += out.decoded
        reference.clear()
        reference.update(sorted(tokens.items()))
        judged = judge_tokens(tokenizer, examples, [tokens[i] for i in range(n)], judge)
        return float(sum(0.0 if c else 1.0 for c in judged.correct) / n)

    losses = _losses_from_batch(n, batch, batch_size)
    return dataclasses.replace(losses, point_risk=point_risk, outputs=reference, stats=stats)


def resolve_judge(judge: Judge | str | None, examples: Sequence[Any]) -> Judge:
    """A judge as given, or the scorer of that name (default ``defaults.SCORER``) compared with each
    example's ``answer`` (every example must then have one)."""
    if callable(judge):
        return judge
    if judge is not None and not isinstance(judge, str):
        raise ValueError(f"judge must be a callable (example, text) -> bool or a scorer name, got {judge!r}")
    scored = answer_judge(judge or defaults.SCORER)
    try:
        for e in examples:
            example_field(e, "answer")
    except ValueError:
        raise ValueError("loss='answer_error' needs an 'answer' on every example, or a verifier as judge") from None
    return scored


def example_losses(
    tokenizer: Any,
    examples: Sequence[Any],
    loss: str,
    *,
    judge: Judge | str | None = None,
    evaluation: EvalConfig | None = None,
    gold: bool = False,
) -> Losses:
    """The configured loss on ``examples`` (items with prompt, response and, for answer_error
    with a scorer, answer). ``judge`` (answer_error only): a
    :data:`~pacbayes_sft.data.scorers.Judge`, or a name / import path of a scorer in
    :mod:`pacbayes_sft.data.scorers` compared with each example's ``answer`` (default
    ``defaults.SCORER``). ``evaluation``: batch size and longest generated answer (default
    :class:`EvalConfig`'s). ``gold`` (answer_error only): check the posterior mean's greedy answers
    against the examples' responses first (:func:`answer_losses`; for training examples)."""
    ev = evaluation if evaluation is not None else EvalConfig()
    if not isinstance(ev, EvalConfig):
        raise ValueError(f"evaluation must be an EvalConfig or None, got {type(ev).__name__}")
    prompts, responses = prompts_and_responses(examples)
    if loss != "answer_error":
        return teacher_forced_losses(tokenizer, prompts, responses, loss, batch_size=ev.batch_size)
    judge = resolve_judge(judge, examples)
    return answer_losses(
        tokenizer, examples, judge, max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size, gold=gold
    )
