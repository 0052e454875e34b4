"""Greedy decoding with a KV cache that stops paying for finished rows, and greedy decoding
verified against a reference generation.

Greedy decoding of a row is a function of the weights alone: token t is the argmax of the
logits after the prompt and tokens < t, until ``<eos>`` or ``max_new_tokens``. Two exact ways
to compute it faster than ``model.generate`` on a batch:

- :func:`greedy_continue` drops a row from the batch (and its KV cache) as soon as it emits
  ``<eos>``, so a batch costs the sum of its rows' lengths, not batch × longest row.
- :func:`greedy_verified`: given a reference continuation g of each row (e.g. the posterior
  mean's greedy answer), one teacher-forced pass over (prompt, g) gives the argmax a_t after
  every prefix (prompt, g_<t). If a_t = g_t for every t, the row's greedy output *is* g; else
  it is g_<t* a_t* followed by greedy decoding from there, t* the first mismatch. A draw near
  the posterior mean then costs one forward pass instead of one per token.

Both return what plain greedy decoding returns, up to floating-point rounding of the logits
(batch shape and KV-cache vs full-sequence attention change the last bits, as batching already
does), so a near-tie between two tokens is the only way they can differ.

Rows are tracked in the original batch's numbering and announced with
:func:`~pacbayes_sft.lm.rows.select_rows`, so per-row posterior draws follow a narrowed batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from .rows import select_rows

LOGIT_BUDGET = 2**27
"""Logit entries (rows × positions × vocabulary) one verification pass may hold (512 MiB in fp32)."""


def _cache_kwarg(model: torch.nn.Module) -> str:
    """``cache`` where the model's forward takes it (transformers ≥ 5.2x), else ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (as ``generate`` does)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def _left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            att[i, width - len(s) :] = 1
    return ids.to(device), att.to(device)


@torch.no_grad()
def greedy_continue(
    model: torch.nn.Module,
    prefixes: Sequence[Sequence[int]],
    limits: Sequence[int],
    *,
    eos_token_id: int,
    pad_token_id: int,
    rows: torch.Tensor | None = None,
) -> list[list[int]]:
    """Greedy continuations of token ``prefixes`` (one batch, left-padded), row i stopping at
    ``<eos>`` (kept in its output) or after ``limits[i]`` ≥ 1 new tokens. ``rows``: the original
    row index of each prefix for per-row hooks (default 0..B−1)."""
    if len(prefixes) != len(limits) or not prefixes:
        raise ValueError(
            f"prefixes and limits must be non-empty and of equal length, got {len(prefixes)} and {len(limits)}"
        )
    if any(int(m) < 1 for m in limits) or any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix needs a token and every limit must be >= 1")
    device = next(model.parameters()).device
    ids, att = _left_pad(prefixes, pad_token_id, device)
    pos = _positions(att)
    rows = torch.arange(len(prefixes)) if rows is None else rows.cpu()
    left = torch.tensor([int(m) for m in limits])
    out: list[list[int]] = [[] for _ in prefixes]
    cache = DynamicCache()
    select_rows(model, rows)
    try:
        return _decode_loop(model, (ids, att, pos), {_cache_kwarg(model): cache}, rows, left, eos_token_id, out)
    finally:
        select_rows(model, None)


def _decode_loop(model, batch, cache_kw: dict, rows, left, eos_token_id: int, out) -> list[list[int]]:
    ids, att, pos = batch
    (cache,) = cache_kw.values()
    device = ids.device
    alive = torch.arange(len(out))
    while True:
        logits = model(
            input_ids=ids, attention_mask=att, position_ids=pos, use_cache=True, logits_to_keep=1, **cache_kw
        ).logits[:, -1]
        nxt = logits.argmax(dim=-1).cpu()
        for j, b in enumerate(alive.tolist()):
            out[b].append(int(nxt[j]))
        left[alive] -= 1
        going = (nxt != eos_token_id) & (left[alive] > 0)
        if not going.any():
            return out
        if not going.all():  # drop finished rows from the batch and its cache
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep.to(device))
            alive, nxt, att, pos = alive[keep], nxt[keep], att[keep.to(device)], pos[keep.to(device)]
            select_rows(model, rows[alive])
        ids = nxt.unsqueeze(1).to(device)
        att = torch.cat([att, att.new_ones((att.shape[0], 1))], dim=1)
        pos = pos[:, -1:] + 1


@torch.no_grad()
def _argmax_after_prefixes(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], pad_id: int, rows
) -> list[list[int]]:
    """For each row, the argmax after (prompt, ref_<t) for t = 0..len(ref)−1, from teacher-forced
    passes over (prompt, ref), left-padded so every row's reference ends in the last columns;
    rows are split so a pass holds at most :data:`LOGIT_BUDGET` logits."""
    device = next(model.parameters()).device
    width = max(len(r) for r in refs)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    step = max(1, LOGIT_BUDGET // max(1, width * vocab))
    result: list[list[int]] = []
    for s in range(0, len(prompts), step):
        chunk = range(s, min(len(prompts), s + step))
        ids, att = _left_pad([[*prompts[i], *refs[i]] for i in chunk], pad_id, device)
        select_rows(model, rows[s : s + len(chunk)])
        # the logits after the last `width` prefixes: position −width−1 .. −2 predict ref tokens
        logits = model(input_ids=ids, attention_mask=att, position_ids=_positions(att), logits_to_keep=width + 1).logits
        arg = logits[:, :-1].argmax(dim=-1).cpu()
        result += [arg[j, width - len(refs[i]) :].tolist() for j, i in enumerate(chunk)]
    return result


@torch.no_grad()
def greedy_verified(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_token_id: int,
    pad_token_id: int,
) -> tuple[list[list[int]], int]:
    """Greedy continuations of ``prompts`` (token ids), checked against ``references`` (each a
    greedy continuation of the same prompt under some model: ends at ``<eos>`` or has
    ``max_new_tokens`` tokens) and regenerated only from the first position where they differ.
    Returns the continuations and how many rows needed decoding beyond the check."""
    if len(prompts) != len(references) or not prompts:
        raise ValueError("prompts and references must be non-empty and of equal length")
    for r in references:
        if (
            not r
            or len(r) > max_new_tokens
            or eos_token_id in r[:-1]
            or (r[-1] != eos_token_id and len(r) != max_new_tokens)
        ):
            raise ValueError(
                "each reference must be a complete greedy continuation: <eos> only at its end, or max_new_tokens long"
            )
    try:
        return _verify(model, prompts, references, max_new_tokens, eos_token_id, pad_token_id)
    finally:
        select_rows(model, None)


def _verify(model, prompts, references, max_new_tokens: int, eos_token_id: int, pad_token_id: int):
    rows = torch.arange(len(prompts))
    argmax = _argmax_after_prefixes(model, prompts, references, pad_token_id, rows)
    out, todo = [], []
    for i, (ref, arg) in enumerate(zip(references, argmax)):
        t = next((k for k, (g, a) in enumerate(zip(ref, arg)) if g != a), None)
        if t is None:
            out.append(list(ref))
            continue
        out.append([*ref[:t], arg[t]])
        if arg[t] != eos_token_id and t + 1 < max_new_tokens:
            todo.append(i)
    if todo:
        tails = greedy_continue(
            model,
            [[*prompts[i], *out[i]] for i in todo],
            [max_new_tokens - len(out[i]) for i in todo],
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            rows=torch.tensor(todo),
        )
        for i, tail in zip(todo, tails):
            out[i] += tail
    return out, len(todo)
