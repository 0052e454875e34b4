"""A model's final answers on prompts, with its confidence in each, under the point model, a
posterior draw per item, or several seeds: the per-item arrays :mod:`.label_free` and
:mod:`pacbayes_sft.bounds.domain_adaptation` take.

For prompt x the model greedily generates a continuation y = (y_1, …, y_m) (its final ``<eos>``
included when it stopped on one). Its confidence is the probability the model gives its own
continuation,

    conf(x) = p(y | x) = exp( Σ_t ln p(y_t | x, y_<t) )      (log-probabilities in nats),

computed by one teacher-forced forward pass over ``<bos> x y`` under the same weights (the same
posterior draw per row) that generated y. The final answer is extracted from the text and put in
a canonical form (:func:`canonical_answer`), so two draws agree exactly when their answers are
equal as the judge compares them.

The teacher-forced pass scores the exact generated token ids, ``<eos>`` included when the model
emitted it (a continuation cut at ``max_new_tokens`` has none). :func:`continuation_logprobs`
scores given texts instead (re-encoded).

That confidence shrinks with the length of the chain, which grows with the difficulty of the
problem, so it confounds "how sure" with "how long". The same pass also gives the **answer
confidence**, the probability of the final answer's tokens given the prompt and the chain before
them,

    conf_ans(x) = exp( Σ_{t ∈ A} ln p(y_t | x, y_<t) ),   A = the tokens that spell the answer

(:func:`answer_token_span`: the last occurrence of the extracted answer in the generated text);
an item with no answer has answer confidence 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import defaults
from ..data.igsm_verify import verify
from ..data.scorers import Judge, extract_final_answer, parse_number
from ..lm.encoding import Encoded, collate
from ..lm.generation import generate_and_judge, item_prompts, judge_tokens
from ..lm.scoring import prompt_token_ids
from ..lm.teacher_forcing import token_logprobs

Extractor = Callable[[str, str], Any]
"""``(prompt, generated_text) -> final answer`` (a string, an int, or None for no answer)."""


def canonical_answer(answer: Any) -> str | None:
    """The form in which two final answers are compared: None for no answer (None or blank); a
    number as its exact reduced value (``"1,234"`` → ``"1234"``, ``"0.50"`` and ``"1/2"`` → ``"1/2"``);
    other text with whitespace collapsed, a trailing period dropped and lower case — the
    normalisation :func:`~pacbayes_sft.data.scorers.answers_match` compares with."""
    if answer is None:
        return None
    text = str(answer).strip()
    if not text:
        return None
    number = parse_number(text)
    if number is not None:
        return str(number)
    return re.sub(r"\s+", " ", text.rstrip(".")).lower()


def final_answer_extractor(prompt: str, text: str) -> str | None:
    """The default :data:`Extractor`: :func:`~pacbayes_sft.data.scorers.extract_final_answer` of the text."""
    return extract_final_answer(text)


def igsm_extractor(modulus: int = 7) -> Extractor:
    """The iGSM verifier's reading of a solution's final answer (its first ``answer N``), so that the
    extracted answers agree with :func:`~pacbayes_sft.data.igsm_verify.igsm_judge`."""
    return lambda prompt, text: verify(prompt, text, modulus).predicted_answer


@dataclass(frozen=True)
class GeneratedAnswers:
    """Per item, in input order: the generated ``texts``, the canonical final ``answers`` (None: no
    answer), ``confidences`` p(y | x) ∈ [0, 1] and their logs ``log_confidences`` (nats), whether
    each answer was judged ``correct`` (0/1; None without a judge), and the posterior ``draws`` each
    item used (None: the model as it is)."""

    texts: list[str]
    answers: list[str | None]
    confidences: list[float]
    log_confidences: list[float]
    correct: list[int] | None = None
    draws: list[int] | None = None
    tokens: list[list[int]] | None = None  # the generated token ids (``<eos>`` kept when emitted)
    answer_confidences: list[float] | None = None  # p(answer tokens | x, chain); 0 without an answer

    def to_dict(self) -> dict[str, list | None]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "tokens"}


def _check_int(value: Any, name: str, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


@torch.no_grad()
def continuation_logprobs(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], texts: Sequence[str], *, max_new_tokens: int
) -> np.ndarray:
    """Σ_t ln p(y_t | x, y_<t) in nats for each (prompt, continuation) pair, from ONE teacher-forced
    forward pass over the batch ``<bos> x y [<eos>]`` (row r is pair r, so per-row posterior draws
    apply); ``<eos>`` is scored unless the continuation has ``max_new_tokens`` tokens (cut off)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("tokenizer must define bos_token and eos_token")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    conts = [[*r, *([eos] if len(r) < max_new_tokens else [])] for r in r_ids]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return token_logprob_sums(model, [[bos, *p] for p in p_ids], conts, pad)


def _items(items: Sequence[Any]) -> tuple[list[Any], list[str]]:
    items = list(items)
    if not items:
        raise ValueError("items must hold at least one prompt (a string) or example (with a 'prompt')")
    prompts = item_prompts(items)
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("items must be non-empty prompt strings or examples with a non-empty 'prompt'")
    return items, prompts


@torch.no_grad()
def _continuation_logprobs(model, prompt_ids, continuations, pad_id) -> tuple[torch.Tensor, torch.Tensor]:
    """(ln p of every next token, mask of the continuation's tokens), both (rows × positions)."""
    enc = [Encoded([*p, *y], len(p)) for p, y in zip(prompt_ids, continuations)]
    batch = collate(enc, pad_id)
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
    return token_logprobs(logits, ids).double().cpu(), batch["response_mask"][:, 1:].bool()


def token_logprob_sums(
    model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad_id: int
) -> np.ndarray:
    """Σ_t ln p(y_t | x, y_<t) in nats of each continuation's exact token ids (its ``<eos>`` among
    them when it stopped on one), from one teacher-forced pass over the batch ``x y`` (``x`` the
    prompt ids, ``<bos>`` included; row r is pair r, so per-row posterior draws apply)."""
    logp, mask = _continuation_logprobs(model, prompt_ids, continuations, pad_id)
    return (logp * mask).sum(dim=1).numpy()


def answer_token_span(tokenizer: Any, tokens: Sequence[int], text: str, answer: Any) -> tuple[int, int] | None:
    """Token indices [start, end) of the continuation ``tokens`` (decoded: ``text``) that spell the
    last occurrence of ``answer`` in ``text``; None when the answer is not in the text. Found by
    bisection on the length of decoded prefixes (a few decodes per item)."""
    if answer is None:
        return None
    raw = str(answer).strip()
    pos = text.rfind(raw) if raw else -1
    if pos < 0:
        return None

    def first_longer(chars: int) -> int:  # the smallest k with len(decode(tokens[:k])) > chars
        lo, hi = 0, len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(tokenizer.decode(list(tokens[: mid + 1]), skip_special_tokens=True)) > chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    start, end = first_longer(pos), first_longer(pos + len(raw) - 1) + 1
    return (start, min(end, len(tokens))) if start < len(tokens) else None


def _per_item_inputs(n: int, posterior: Any, draw_indices, reference, tokens) -> list[int] | None:
    """The draw index of each of ``n`` items (None: no posterior), after checking that every
    per-item input has one entry per item."""
    if (posterior is None) != (draw_indices is None):
        raise ValueError("posterior and draw_indices go together: one draw index per item")
    draws = None if draw_indices is None else [int(k) for k in draw_indices]
    if draws is not None and len(draws) != n:
        raise ValueError(f"draw_indices must have one index per item ({n}), got {len(draws)}")
    for name, given in (("reference", reference), ("tokens", tokens)):
        if given is not None and len(given) != n:
            raise ValueError(f"{name} must hold one token list per item ({n}), got {len(given)}")
    return draws


class RowDraws(NamedTuple):
    """Per-row posterior draws: item i generates and is scored under draw ``indices[i]`` of
    ``posterior`` (a :class:`~pacbayes_sft.posteriors.GaussianPosterior` on the model)."""

    posterior: Any
    indices: Sequence[int]


def collect_answers(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Any],
    *,
    judge: Judge | None = None,
    extract: Extractor | None = None,
    draws: RowDraws | None = None,
    reference: Sequence[Sequence[int]] | None = None,
    confidence: bool = True,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
) -> GeneratedAnswers:
    """Generate, extract and score every item once (greedy decoding), with its confidence.

    Args:
        items: prompt strings, or examples with a ``prompt`` (and whatever ``judge`` reads).
        judge: a :data:`~pacbayes_sft.data.scorers.Judge` ``(item, text) -> bool`` for a labelled
            sample; None for test prompts (no correctness is computed).
        extract: an :data:`Extractor` (default :func:`final_answer_extractor`; for iGSM,
            :func:`igsm_extractor`, which reads answers as the verifier does).
        draws: per-row posterior draws (:class:`RowDraws`); None: the model itself.
        reference: greedy token ids of each item under another model (e.g. the posterior mean's
            ``tokens``): each continuation is verified against it and decoded only from where it
            departs (:func:`~pacbayes_sft.lm.generation.generate_and_judge`; the same output, faster).
        confidence: compute each confidence (one teacher-forced pass per batch); False leaves
            ``confidences`` and ``log_confidences`` NaN (e.g. posterior draws, whose answers alone
            the disagreement estimators read).

    Answers already generated are scored by :func:`answers_of_tokens` instead.
    """
    _check_int(max_new_tokens, "max_new_tokens")
    return _collect(model, tokenizer, items, judge, extract, draws, reference, None, confidence, max_new_tokens, batch_size)


def answers_of_tokens(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Any],
    tokens: Sequence[Sequence[int]] | None,
    *,
    judge: Judge | None = None,
    extract: Extractor | None = None,
    confidence: bool = True,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
) -> GeneratedAnswers:
    """As :func:`collect_answers` for answers the model has already generated: ``tokens`` are its
    own greedy token ids per item, only extracted, scored and given confidences (None: generate
    them, exactly as :func:`collect_answers` does)."""
    _check_int(max_new_tokens, "max_new_tokens")
    return _collect(model, tokenizer, items, judge, extract, None, None, tokens, confidence, max_new_tokens, batch_size)


def _collect(model, tokenizer, items, judge, extract, row_draws, reference, tokens, confidence, max_new_tokens, batch_size):
    """The one loop behind :func:`collect_answers` and :func:`answers_of_tokens`."""
    items, prompts = _items(items)
    _check_int(batch_size, "batch_size")
    if judge is not None and not callable(judge):
        raise ValueError(f"judge must be a callable (item, text) -> bool, got {judge!r}")
    if row_draws is not None and not isinstance(row_draws, tuple):
        raise ValueError(f"draws must be a RowDraws(posterior, indices), got {row_draws!r}")
    posterior, draw_indices = row_draws if row_draws is not None else (None, None)
    draws = _per_item_inputs(len(items), posterior, draw_indices, reference, tokens)
    extract = extract or final_answer_extractor
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[list[int]] = []
    texts: list[str] = []
    correct: list[int] = []
    logps: list[float] = []
    per_token: list[np.ndarray] = []  # each continuation's token log-probabilities (for the answer's)
    for s in range(0, len(items), batch_size):
        rows = list(range(s, min(len(items), s + batch_size)))
        ctx = nullcontext(model) if draws is None else posterior.sample_rows([draws[i] for i in rows])
        with ctx as mdl:
            if tokens is not None:  # the model's own answers, already generated: judged only
                judged = judge_tokens(tokenizer, [items[i] for i in rows], [tokens[i] for i in rows], judge)
            else:  # row r of the batch is item rows[r], under draw draws[rows[r]]
                judged = generate_and_judge(
                    mdl, tokenizer, [items[i] for i in rows], judge, prompt_ids=[prompt_ids[i] for i in rows],
                    references=None if reference is None else [reference[i] for i in rows],
                    max_new_tokens=max_new_tokens,
                )  # fmt: skip
            if confidence:
                logp, mask = _continuation_logprobs(mdl, [prompt_ids[i] for i in rows], judged.tokens, pad)
                logps += (logp * mask).sum(dim=1).tolist()
                per_token += [logp[r][mask[r]].numpy() for r in range(len(rows))]
            else:
                logps += [float("nan")] * len(rows)
        out += judged.tokens
        texts += judged.texts
        correct += [int(c) for c in judged.correct or ()]
    raw = [extract(p, t) for p, t in zip(prompts, texts)]
    return GeneratedAnswers(
        texts=texts,
        answers=[canonical_answer(a) for a in raw],
        confidences=[float(np.exp(v)) for v in logps],
        log_confidences=[float(v) for v in logps],
        correct=None if judge is None else correct,
        draws=draws,
        tokens=out,
        answer_confidences=_answer_confidences(tokenizer, out, texts, raw, per_token) if confidence else None,
    )


def _answer_confidences(tokenizer, tokens, texts, answers, per_token) -> list[float]:
    """p(answer tokens | x, chain) per item (0 where no answer is found in the text)."""
    conf = []
    for toks, text, ans, lp in zip(tokens, texts, answers, per_token):
        span = answer_token_span(tokenizer, toks, text, ans)
        conf.append(0.0 if span is None else float(np.exp(lp[span[0] : span[1]].sum())))
    return conf


def collect_draws(
    posterior: Any,
    tokenizer: Any,
    items: Sequence[Any],
    *,
    draws: int = 2,
    first_draw: int = 0,
    **kwargs: Any,
) -> list[GeneratedAnswers]:
    """``draws`` independent posterior draws per item: answers of draw j on item i come from
    posterior sample ``first_draw + j·n + i`` (no two (item, draw) pairs share a sample, so every
    item's draws are independent of every other's). Returns one :class:`GeneratedAnswers` per draw:
    ``[g.answers for g in result]`` is the (k, n) input of
    :class:`~pacbayes_sft.bounds.domain_adaptation.PosteriorDraws`. Other keywords go to
    :func:`collect_answers`. Give disjoint ``first_draw`` ranges to samples that must be independent
    (e.g. source at 0, target at ``draws`` × the number of source items)."""
    _check_int(draws, "draws", 2)
    _check_int(first_draw, "first_draw", 0)
    items = list(items)
    n = len(items)
    return [
        collect_answers(
            posterior.model,
            tokenizer,
            items,
            draws=RowDraws(posterior, [first_draw + j * n + i for i in range(n)]),
            **kwargs,
        )
        for j in range(draws)
    ]
