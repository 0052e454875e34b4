"""LoRA fine-tuning in a random low-dimensional subspace: SFT of the coordinates z only (the family
itself — the subspace, its posterior and KL — is :mod:`pacbayes_sft.posteriors.subspace`)."""

from __future__ import annotations

import torch

from ..lm.encoding import collate, encode
from ..posteriors.subspace import LoRASubspace, SubspacePosterior, subspace_kl

__all__ = ["LoRASubspace", "SubspacePosterior", "subspace_kl", "train_subspace"]


def train_subspace(
    peft_model,
    tokenizer,
    prompts,
    responses,
    *,
    dim: int,
    steps: int,
    lr: float = 0.05,
    batch_size: int = 16,
    seed: int = 0,
    subspace: LoRASubspace | None = None,
) -> tuple[LoRASubspace, list[float]]:
    """SFT (response-token cross-entropy) of z only; returns the subspace and the loss per step.
    ``subspace``: continue training its z (e.g. from a data-dependent prior's centre) instead of
    attaching a new one."""
    sub = LoRASubspace(peft_model, dim, seed=seed) if subspace is None else subspace
    enc = encode(tokenizer, prompts, responses)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([sub.z], lr=lr)
    history = []
    peft_model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(enc), (min(batch_size, len(enc)),), generator=gen).tolist()
        b = collate([enc[i] for i in idx], tokenizer.pad_token_id)
        loss = peft_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    peft_model.eval()
    return sub, history
