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
  it is g_<t* a_t* followed by greedy decoding from there, t* the first mismatch, on the pass's
  own KV cache cut to the verified prefix (departed rows of several passes decoded together). A
  draw near the posterior mean then costs one forward pass instead of one per token.

Both return what plain greedy decoding returns, up to floating-point rounding of the logits
(batch shape and KV-cache vs full-sequence attention change the last bits, as batching already
does), so a near-tie between two tokens is the only way they can differ.

:func:`greedy` is the one entry point the rest of the package decodes with: it checks the rows
that come with a reference (:func:`greedy_verified`) and decodes the others (:func:`greedy_continue`),
in batches as given or grouped by length.

Rows are tracked in the original batch's numbering and announced with
:func:`~pacbayes_sft.lm.rows.select_rows`, so per-row posterior draws follow a narrowed batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

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


@dataclass
class _Departed:
    """A row of a verification pass that departed from its reference, ready to decode on: its
    original row index, attention mask and KV cache (keys, values per layer) up to the end of its
    verified prefix (prompt, ref_<t*), the token it feeds next (its argmax a_t*), that token's
    position, and how many tokens it may still add. Its cache columns are contiguous, as plain
    decoding's are (a sliding-window mask counts columns, so a masked hole would shorten it).
    ``slot``: its position in the output list."""

    slot: int
    rows: torch.Tensor
    att: torch.Tensor
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    next_ids: torch.Tensor
    next_pos: torch.Tensor
    left: torch.Tensor


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers before 4.56


@torch.no_grad()
def _check_chunk(model, prompts, refs, pad_id: int, rows, max_new_tokens: int, eos_token_id: int, first: int = 0):
    """One teacher-forced pass over (prompt, ref) for each row (left-padded, every reference ending
    in the last column), its KV cache kept. Row i's output is ref if the argmax after every prefix
    (prompt, ref_<t) is ref_t; else ref_<t* then the argmax a_t* at the first departure t*, to be
    decoded on from this pass's own cache (no second pass over the prompt). Returns the outputs so
    far and the rows to decode on (:class:`_Departed`), prompt j at output slot ``first + j``."""
    device = next(model.parameters()).device
    width = max(len(r) for r in refs)
    ids, att = _left_pad([[*p, *r] for p, r in zip(prompts, refs)], pad_id, device)
    cache = DynamicCache()
    select_rows(model, rows)
    # the logits after the last `width` prefixes: position −width−1 .. −2 predict ref tokens
    logits = model(
        input_ids=ids, attention_mask=att, position_ids=_positions(att), use_cache=True, logits_to_keep=width + 1,
        **{_cache_kwarg(model): cache},
    ).logits  # fmt: skip
    arg = logits[:, -(width + 1) : -1].argmax(dim=-1).cpu()
    out, departed = [], []
    layers = None
    for j, ref in enumerate(refs):
        a = arg[j, width - len(ref) :].tolist()
        t = next((k for k, (g, b) in enumerate(zip(ref, a)) if g != b), None)
        out.append(list(ref) if t is None else [*ref[:t], a[t]])
        if t is None or a[t] == eos_token_id or t + 1 >= max_new_tokens:
            continue
        end = ids.shape[1] - len(ref) + t  # the column of ref_t*: the row's cache is kept up to it
        layers = _cache_layers(cache) if layers is None else layers
        departed.append(
            _Departed(
                slot=first + j,
                rows=rows[j : j + 1],
                att=att[j : j + 1, :end],
                layers=[(k[j : j + 1, :, :end], v[j : j + 1, :, :end]) for k, v in layers],
                next_ids=torch.tensor([[a[t]]], device=device),
                next_pos=torch.tensor([[len(prompts[j]) + t]], device=device),
                left=torch.tensor([max_new_tokens - len(out[j])]),
            )
        )
    return out, departed


def _pad_left(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``x`` with zeros before its entries along ``dim`` up to ``width``."""
    extra = width - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x.new_zeros(shape), x], dim=dim)


@torch.no_grad()
def _decode_departed(model, parts: list[_Departed], eos_token_id: int) -> list[list[int]]:
    """Greedy continuations of the departed rows of several passes in one batch: their caches and
    masks left-padded to a common width (padding masked out) and stacked, then decoded on."""
    width = max(p.att.shape[1] for p in parts)
    att = torch.cat([_pad_left(p.att, width, 1) for p in parts])
    layers = [
        (
            torch.cat([_pad_left(p.layers[i][0], width, -2) for p in parts]),
            torch.cat([_pad_left(p.layers[i][1], width, -2) for p in parts]),
        )
        for i in range(len(parts[0].layers))
    ]
    cache = DynamicCache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    rows = torch.cat([p.rows for p in parts])
    att = torch.cat([att, att.new_ones((att.shape[0], 1))], dim=1)
    batch = (torch.cat([p.next_ids for p in parts]), att, torch.cat([p.next_pos for p in parts]))
    tails: list[list[int]] = [[] for _ in range(len(rows))]
    select_rows(model, rows)
    left = torch.cat([p.left for p in parts])
    return _decode_loop(model, batch, {_cache_kwarg(model): cache}, rows, left, eos_token_id, tails)


def complete_continuation(tokens: Sequence[int], max_new_tokens: int, eos_token_id: int) -> bool:
    """Whether ``tokens`` is a whole greedy continuation: ``<eos>`` only at its end, or
    ``max_new_tokens`` long without one."""
    if not tokens or len(tokens) > max_new_tokens or eos_token_id in tokens[:-1]:
        return False
    return tokens[-1] == eos_token_id or len(tokens) == max_new_tokens


def _row_ids(rows: Sequence[int] | torch.Tensor | None, n: int) -> torch.Tensor:
    """``rows`` as a 1-D long CPU tensor of ``n`` original row indices (default 0..n−1)."""
    if rows is None:
        return torch.arange(n)
    ids = torch.as_tensor(rows, dtype=torch.long).cpu().reshape(-1)
    if len(ids) != n:
        raise ValueError(f"rows must hold one original row index per prompt ({n}), got {len(ids)}")
    return ids


@torch.no_grad()
def greedy_verified(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    eos_token_id: int,
    pad_token_id: int,
    batch_size: int | None = None,
    rows: Sequence[int] | torch.Tensor | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy continuations of ``prompts`` (token ids), checked against ``references`` (each a
    greedy continuation of the same prompt under some model: ends at ``<eos>`` or has
    ``max_new_tokens`` tokens) and regenerated only from the first position where they differ.
    ``batch_size``: rows per teacher-forced pass (default: as many as :data:`LOGIT_BUDGET` allows);
    rows that depart in several passes are decoded on together. ``rows``: the original row index
    of each prompt for per-row hooks (default 0..B−1). Returns the continuations and how many rows
    needed decoding beyond the check."""
    if len(prompts) != len(references) or not prompts:
        raise ValueError("prompts and references must be non-empty and of equal length")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs a token")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    for r in references:
        if not complete_continuation(r, max_new_tokens, eos_token_id):
            raise ValueError(
                "each reference must be a complete greedy continuation: <eos> only at its end, or max_new_tokens long"
            )
    ids = _row_ids(rows, len(prompts))
    try:
        return _verify(model, prompts, references, max_new_tokens, (eos_token_id, pad_token_id), batch_size, ids)
    finally:
        select_rows(model, None)


def _verify(model, prompts, references, max_new_tokens: int, eos_pad: tuple[int, int], batch_size, rows: torch.Tensor):
    """Rows in passes of at most ``batch_size`` rows and :data:`LOGIT_BUDGET` logits
    (:func:`_check_chunk`); the departed rows of consecutive passes are decoded on together,
    ``batch_size`` rows at a time (:func:`_decode_departed`). ``rows``: the original row index of
    each prompt, announced to per-row hooks."""
    eos_token_id, pad_token_id = eos_pad
    width = max(len(r) for r in references)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    group = batch_size or len(prompts)
    step = max(1, min(group, LOGIT_BUDGET // max(1, (width + 1) * vocab)))
    out: list[list[int]] = []
    pending: list[_Departed] = []

    def flush(parts: list[_Departed]) -> None:
        for p, tail in zip(parts, _decode_departed(model, parts, eos_token_id)):
            out[p.slot] += tail

    decoded = 0
    for s in range(0, len(prompts), step):
        o, parts = _check_chunk(
            model, prompts[s : s + step], references[s : s + step], pad_token_id, rows[s : s + step], max_new_tokens,
            eos_token_id, first=s,
        )  # fmt: skip
        out += o
        decoded += len(parts)
        pending += parts
        while len(pending) >= group:
            flush(pending[:group])
            pending = pending[group:]
    if pending:
        flush(pending)
    return out, decoded


class Greedy(NamedTuple):
    """Greedy continuations in input order (token ids, ``<eos>`` kept when emitted), and how many
    rows needed decoding: every row without a reference, and those that departed from theirs."""

    tokens: list[list[int]]
    decoded: int


def _check_greedy_args(prompts, reference, max_new_tokens, batch_size) -> list[list[int] | None]:
    """The per-row references (None: decode) after checking :func:`greedy`'s arguments."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("prompts: every prompt needs a token (its <bos> at least)")
    if reference is None:
        return [None] * len(prompts)
    if len(reference) != len(prompts):
        raise ValueError(f"reference must hold one entry per prompt ({len(prompts)}), got {len(reference)}")
    return [None if r is None else list(r) for r in reference]


@torch.no_grad()
def greedy(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    reference: Sequence[Sequence[int] | None] | None = None,
    batch_size: int | None = None,
    by_length: bool = False,
) -> Greedy:
    """Greedy continuations of ``prompts`` (token ids, ``<bos>`` included), each stopping at
    ``<eos>`` (kept) or after ``max_new_tokens`` tokens: the package's one way to decode greedily.

    ``reference``: per prompt, a candidate continuation (e.g. the posterior mean's greedy answer,
    a complete greedy continuation: ``<eos>`` only at its end, or ``max_new_tokens`` long) or None.
    Rows with one are checked by one teacher-forced pass and decoded on only where they depart
    (:func:`greedy_verified`); the others are decoded (:func:`greedy_continue`). Either way the
    output is plain greedy decoding's (up to the rounding of the logits in a batch, see above).

    ``batch_size``: rows per decoding batch and per verification pass (None: all in one, a pass
    held to :data:`LOGIT_BUDGET`). ``by_length``: batch rows of similar length together (prompt
    plus reference tokens; less padding) instead of in the given order. Row i is announced to
    per-row hooks as row i whatever the batching, so ``prompts[i]`` decodes under draw i of
    :meth:`~pacbayes_sft.posteriors.GaussianPosterior.sample_rows`.
    """
    refs = _check_greedy_args(prompts, reference, max_new_tokens, batch_size)
    checked = [i for i, r in enumerate(refs) if r is not None]
    plain = [i for i, r in enumerate(refs) if r is None]
    if by_length:  # stable: rows of equal length keep their order
        checked.sort(key=lambda i: len(prompts[i]) + len(refs[i]))
        plain.sort(key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    decoded = len(plain)
    if checked:
        got, departed = greedy_verified(
            model, [prompts[i] for i in checked], [refs[i] for i in checked], max_new_tokens,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, batch_size=batch_size, rows=checked,
        )  # fmt: skip
        decoded += departed
        for i, g in zip(checked, got):
            out[i] = g
    step = batch_size or max(1, len(plain))
    for s in range(0, len(plain), step):
        idx = plain[s : s + step]
        got = greedy_continue(
            model, [prompts[i] for i in idx], [max_new_tokens] * len(idx),
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, rows=torch.tensor(idx),
        )  # fmt: skip
        for i, g in zip(idx, got):
            out[i] = g
    return Greedy(out, decoded)
