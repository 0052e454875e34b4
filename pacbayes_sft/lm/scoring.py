"""Scoring a causal LM on (prompt, response) pairs: teacher-forced metrics and generation.

These are the primitives every layer scores models with — training (evaluation by slice),
estimators (model-relative difficulty) and certify (losses under posterior draws) — so they
live below all of them.

- ``teacher_forced_metrics``: per-example exact match, token error ∈ [0, 1], NLL (nats) and
  smoothed NLL, from one forward pass per batch.
- ``generate_texts``: batched decoding with a KV cache (greedy, or sampled at a temperature).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import defaults
from .decoding import greedy
from .encoding import collate, collate_prompts_left, encode
from .teacher_forcing import teacher_forced_stats


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def teacher_forced_metrics(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    batch_size: int = defaults.BATCH_SIZE,
    alpha: float = 0.01,
    keep_order: bool = False,
) -> dict[str, list[float]]:
    """Per-example teacher-forced statistics (lists aligned with the inputs).

    Examples are sorted by length for batching (less padding), results returned in input order;
    ``keep_order=True`` batches them as given (row r of a batch is input r, which per-row
    posterior draws rely on).
    """
    enc = encode(tokenizer, prompts, responses)
    order = list(range(len(enc))) if keep_order else sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    out = {k: [0.0] * len(enc) for k in ("exact_match", "token_error", "nll", "smoothed_nll")}
    device = next(model.parameters()).device
    for sl in _batches(len(order), batch_size):
        idx = order[sl]
        b = collate([enc[i] for i in idx], tokenizer.pad_token_id)
        st = teacher_forced_stats(
            model, b["input_ids"].to(device), b["response_mask"].to(device), b["attention_mask"].to(device), alpha=alpha
        )
        for j, i in enumerate(idx):
            out["exact_match"][i] = float(st.exact_match[j])
            out["token_error"][i] = float(st.token_error[j])
            out["nll"][i] = float(st.nll[j])
            out["smoothed_nll"][i] = float(st.smoothed_nll[j])
    return out


@torch.no_grad()
def teacher_forced_role_errors(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    roles: Sequence[Sequence[str]],
    *,
    batch_size: int = defaults.BATCH_SIZE,
) -> dict[str, tuple[int, int]]:
    """Teacher-forced argmax errors grouped by the role of each response token.

    ``roles[i]`` names the role of every token of ``responses[i]`` (as the tokenizer splits it);
    the closing <eos> gets the role ``"eos"``. Returns ``{role: (errors, tokens)}``, which says
    which skill a model lacks (e.g. looking values up against doing the arithmetic).
    """
    enc = encode(tokenizer, prompts, responses)
    if len(roles) != len(enc):
        raise ValueError(f"roles must have one entry per example ({len(enc)}), got {len(roles)}")
    for i, (e, r) in enumerate(zip(enc, roles)):
        if len(r) != len(e.ids) - e.prompt_len - 1:
            raise ValueError(
                f"roles[{i}] must name each of the {len(e.ids) - e.prompt_len - 1} response tokens, got {len(r)}"
            )
    counts: dict[str, list[int]] = {}
    device = next(model.parameters()).device
    for sl in _batches(len(enc), batch_size):
        idx = range(len(enc))[sl]
        b = collate([enc[i] for i in idx], tokenizer.pad_token_id)
        st = teacher_forced_stats(
            model, b["input_ids"].to(device), b["response_mask"].to(device), b["attention_mask"].to(device)
        )
        wrong_all = st.wrong.cpu()
        for j, i in enumerate(idx):
            e = enc[i]
            wrong = wrong_all[j, e.prompt_len - 1 : len(e.ids) - 1].tolist()  # column t − 1 is token t
            for role, w in zip([*roles[i], "eos"], wrong):
                c = counts.setdefault(role, [0, 0])
                c[0] += int(w)
                c[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _prompt_order(enc, keep_order: bool) -> list[int]:
    return list(range(len(enc))) if keep_order else sorted(range(len(enc)), key=lambda i: enc[i].prompt_len)


@torch.no_grad()
def generate_token_ids(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
    keep_order: bool = False,
) -> list[list[int]]:
    """Greedy continuations of ``<bos> prompt`` as token ids, ``<eos>`` kept when emitted
    (:func:`~pacbayes_sft.lm.decoding.greedy`: KV cache, finished rows leave the batch).
    Prompts are batched by length unless ``keep_order=True`` (then batches hold the prompts in
    their order); prompt i is row i for per-row hooks either way."""
    ids = prompt_token_ids(tokenizer, prompts) if prompts else []
    return greedy(
        model, ids, max_new_tokens=max_new_tokens, batch_size=batch_size, by_length=not keep_order,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ).tokens  # fmt: skip


def prompt_token_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """``<bos> prompt`` as token ids, as every decoder here feeds it."""
    return [e.ids[: e.prompt_len] for e in encode(tokenizer, prompts, ["x"] * len(prompts))]


@torch.no_grad()
def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
    temperature: float | None = None,
    keep_order: bool = False,
) -> list[str]:
    """Continuations of ``<bos> prompt``, decoded to text.

    ``temperature=None`` decodes greedily (:func:`generate_token_ids`); a positive temperature
    samples from the full softmax (top_k = 0, ``model.generate`` with a KV cache) under torch's
    global generator, which the caller seeds. Prompts are batched by length unless
    ``keep_order=True`` (then row r of a batch is prompt r).
    """
    if temperature is None:
        ids = generate_token_ids(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, keep_order=keep_order
        )
        return [tokenizer.decode(g, skip_special_tokens=True) for g in ids]
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (or None for greedy decoding), got {temperature!r}")
    enc = encode(tokenizer, prompts, ["x"] * len(prompts)) if prompts else []
    order = _prompt_order(enc, keep_order)
    texts = [""] * len(enc)
    device = next(model.parameters()).device
    for sl in _batches(len(order), batch_size):
        idx = order[sl]
        b = collate_prompts_left([enc[i] for i in idx], tokenizer.pad_token_id)
        gen = model.generate(
            input_ids=b["input_ids"].to(device),
            attention_mask=b["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            do_sample=True,
            temperature=temperature,
            top_k=0,
        )
        new = gen[:, b["input_ids"].shape[1] :]
        for j, i in enumerate(idx):
            texts[i] = tokenizer.decode(new[j], skip_special_tokens=True)
    return texts


def greedy_generate(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = defaults.MAX_NEW_TOKENS, batch_size: int = defaults.BATCH_SIZE
) -> list[str]:
    """Greedy continuations of ``<bos> prompt`` (left-padded batches, KV cache), decoded to text."""
    return generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
