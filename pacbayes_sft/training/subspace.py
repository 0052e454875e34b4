"""LoRA fine-tuning in a random low-dimensional subspace (intrinsic dimension / SubLoRA style).

All LoRA factors θ ∈ R^D move only along d fixed random directions:

    θ = θ₀ + P z,   z ∈ R^d,   P ∈ R^{D×d} with i.i.d. N(0, 1/D) entries (seeded, data-free)

so ‖P z‖ ≈ ‖z‖. The Gaussian prior N(z_p, σ²I_d) and posterior N(z*, σ²I_d) live in the subspace:

    KL = ‖z* − z_p‖² / (2σ²)   (nats; with posterior scale s: ½[d(s²/σ² − 1 + ln(σ²/s²)) + ‖z* − z_p‖²/σ²])

z_p = 0 (the adapter's initialisation) is a data-free prior. A data-dependent prior sets z_p to the
coordinates trained on a held-out part of S (:meth:`LoRASubspace.fix_prior_centre`) and continues
training from there; the bound then uses only the rest of S.

P is generated per LoRA tensor from (seed, tensor index), so it is reproducible and never depends
on the data; only z is trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..lm.encoding import collate, encode


def subspace_kl(z: torch.Tensor, sigma_prior: float, sigma_post: float | None = None) -> float:
    """KL(N(z, s²I_d) ‖ N(0, σ²I_d)) in nats (s = σ when ``sigma_post`` is None)."""
    d = z.numel()
    s = sigma_prior if sigma_post is None else sigma_post
    ratio = (s / sigma_prior) ** 2
    return 0.5 * (d * (ratio - 1 - math.log(ratio)) + float((z.double() ** 2).sum()) / sigma_prior**2)


class _Offset(torch.nn.Module):
    def __init__(self, owner: LoRASubspace, index: int):
        super().__init__()
        self.owner, self.index = [owner], index  # a list: no submodule cycle

    def forward(self, base: torch.Tensor) -> torch.Tensor:
        return base + self.owner[0].offset(self.index).view_as(base)


class LoRASubspace(torch.nn.Module):
    """The trainable coordinates z of a peft model's LoRA factors in a random d-dim subspace."""

    def __init__(self, peft_model: torch.nn.Module, dim: int, *, seed: int = 0):
        from peft.tuners.lora import LoraLayer
        from torch.nn.utils import parametrize

        super().__init__()
        if not (isinstance(dim, int) and dim >= 1):
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        self.z = torch.nn.Parameter(torch.zeros(dim))
        self.centre = torch.zeros(dim)  # the prior's mean z_p (0: data-free)
        self.noise = torch.zeros(dim)  # added to z inside sample(); zero at the posterior mean
        self.mods: list[torch.nn.Module] = []
        for _, layer in peft_model.named_modules():
            if isinstance(layer, LoraLayer):
                for ad in layer.active_adapters:
                    if ad in layer.lora_A:
                        self.mods += [layer.lora_A[ad], layer.lora_B[ad]]
        if not self.mods:
            raise ValueError("model has no LoRA layers")
        self.total = sum(m.weight.numel() for m in self.mods)
        self.seed = seed
        self._P = []
        for i, m in enumerate(self.mods):
            m.weight.requires_grad_(False)
            gen = torch.Generator().manual_seed(seed * 100_003 + i)
            self._P.append(torch.randn(m.weight.numel(), dim, generator=gen) / math.sqrt(self.total))
            parametrize.register_parametrization(m, "weight", _Offset(self, i))

    def offset(self, index: int) -> torch.Tensor:
        return self._P[index] @ (self.z + self.noise)

    def kl(self, sigma: float) -> float:
        """KL(N(z, σ²I_d) ‖ N(z_p, σ²I_d)) = ‖z − z_p‖²/(2σ²) nats."""
        return subspace_kl(self.z.detach().double() - self.centre.double(), sigma)

    def fix_prior_centre(self) -> None:
        """Centre the prior at the current coordinates (trained on data the bound will not use)."""
        self.centre = self.z.detach().clone()

    @contextmanager
    def sample(self, sigma: float, index: int, seed: int = 0) -> Iterator[None]:
        """Inside: the model computes with z + σ·ε, ε ~ N(0, I_d) from (seed, index)."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        self.noise = sigma * torch.randn(self.z.shape, generator=gen)
        try:
            yield
        finally:
            self.noise = torch.zeros_like(self.z)


class SubspacePosterior:
    """N(z*, σ²I_d) in the subspace, with the ``sample(index)`` interface of the toolkit's MC risk."""

    def __init__(self, subspace: LoRASubspace, model: torch.nn.Module, sigma: float, *, seed: int = 0):
        self.subspace, self.model, self.sigma, self.seed = subspace, model, float(sigma), seed
        self.space = f"subspace (d={subspace.z.numel()})"

    @contextmanager
    def sample(self, index: int) -> Iterator[torch.nn.Module]:
        with self.subspace.sample(self.sigma, index, self.seed):
            yield self.model


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
