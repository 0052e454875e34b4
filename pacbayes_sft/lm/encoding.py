"""Turn (prompt, response) texts into token batches.

A sequence is ``<bos> prompt response <eos>``; the response mask covers the response and <eos>,
the only tokens that carry loss. Training batches are right-padded; generation batches are
left-padded so every prompt ends at the same position.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    ids: list[int]
    prompt_len: int  # tokens before the response, <bos> included


def encode(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoded]:
    """Encode pairs as ``<bos> prompt response <eos>`` (no special tokens added by the tokenizer)."""
    if len(prompts) != len(responses):
        raise ValueError(f"prompts and responses must have equal length, got {len(prompts)} and {len(responses)}")
    if not prompts:
        raise ValueError("prompts must not be empty")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("tokenizer must define bos_token and eos_token")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    out = []
    for p, r in zip(p_ids, r_ids):
        if not r:
            raise ValueError("every response must have at least one token")
        out.append(Encoded([bos, *p, *r, eos], 1 + len(p)))
    return out


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask, response_mask and labels (−100 off the response)."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    resp = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        att[i, :n] = 1
        resp[i, e.prompt_len : n] = 1
    labels = ids.masked_fill(resp == 0, -100)
    return {"input_ids": ids, "attention_mask": att, "response_mask": resp, "labels": labels}


def collate_prompts_left(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts (``<bos> prompt``) for batched generation."""
    width = max(e.prompt_len for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = e.prompt_len
        ids[i, width - n :] = torch.tensor(e.ids[:n])
        att[i, width - n :] = 1
    return {"input_ids": ids, "attention_mask": att}


def length_grouped_batches(lengths: Sequence[int], batch_size: int, *, seed: int, mega: int = 50) -> list[list[int]]:
    """Indices in batches of similar length: shuffle, sort within mega-batches of
    ``mega × batch_size``, cut into batches, shuffle the batches (padding shrinks, order stays random)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    span = batch_size * mega
    for s in range(0, len(idx), span):
        chunk = sorted(idx[s : s + span], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
