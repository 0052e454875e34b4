"""The random-subspace posterior family (intrinsic dimension / SubLoRA style).

All LoRA factors θ ∈ R^D move only along d fixed random directions:

    θ = θ₀ + P z,   z ∈ R^d,   P ∈ R^{D×d} with i.i.d. N(0, 1/D) entries (seeded, data-free)

so ‖P z‖ ≈ ‖z‖. The Gaussian prior N(z_p, σ²I_d) and posterior N(z*, σ²I_d) live in the subspace:

    KL = ‖z* − z_p‖² / (2σ²)   (nats; with posterior scale s: ½[d(s²/σ² − 1 + ln(σ²/s²)) + ‖z* − z_p‖²/σ²])

z_p = 0 (the adapter's initialisation) is a data-free prior. A data-dependent prior sets z_p to the
coordinates trained on a held-out part of S (:meth:`LoRASubspace.fix_prior_centre`) and continues
training from there; the bound then uses only the rest of S. Training z is
:func:`pacbayes_sft.training.subspace.train_subspace`.

P is generated per LoRA tensor from (seed, tensor index), so it is reproducible and never depends
on the data; only z is trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch

from ..adapters import lora_modules
from .base import Prior, check_sigma
from .kl import kl_divergence, register_kl


def subspace_kl(z: torch.Tensor, sigma_prior: float, sigma_post: float | None = None) -> float:
    """KL(N(z, s²I_d) ‖ N(0, σ²I_d)) in nats (s = σ when ``sigma_post`` is None)."""
    d = z.numel()
    s = sigma_prior if sigma_post is None else sigma_post
    if not (sigma_prior > 0 and s > 0):
        raise ValueError(f"sigma_prior and sigma_post must be > 0, got {sigma_prior!r} and {s!r}")
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
        from torch.nn.utils import parametrize

        super().__init__()
        if not (isinstance(dim, int) and dim >= 1):
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        self.z = torch.nn.Parameter(torch.zeros(dim))
        self.centre = torch.zeros(dim)  # the prior's mean z_p (0: data-free)
        self.noise = torch.zeros(dim)  # added to z inside sample(); zero at the posterior mean
        self.mods: list[torch.nn.Module] = [m for _, a, b in lora_modules(peft_model) for m in (a, b)]
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
    """N(z*, σ²I_d) in the subspace: a :class:`~pacbayes_sft.posteriors.base.Posterior`.

    A draw moves every LoRA factor at once (the offset P(z + σε) is a parametrisation of the
    shared weights), so one batch computes under one draw: ``per_row`` is False and
    :meth:`sample_rows` raises TypeError; the per-example Monte-Carlo risk then scores one example
    per draw through :meth:`sample` (the same estimate, one forward pass per example)."""

    per_row = False

    def __init__(self, subspace: LoRASubspace, model: torch.nn.Module, sigma: float, *, seed: int = 0):
        self.subspace, self.model, self.sigma, self.seed = subspace, model, check_sigma(sigma), seed
        self.space = f"subspace (d={subspace.z.numel()})"

    @contextmanager
    def sample(self, index: int) -> Iterator[torch.nn.Module]:
        with self.subspace.sample(self.sigma, index, self.seed):
            yield self.model

    def sample_rows(self, indices: Sequence[int]) -> AbstractContextManager[torch.nn.Module]:
        """Not available: a subspace draw moves the shared weights, one draw per batch (TypeError)."""
        raise TypeError(
            "SubspacePosterior draws one sample per batch (per_row is False); score one example per "
            "draw with sample(index)"
        )

    def kl(self, prior: Prior) -> float:
        """KL(N(z*, σ²I_d) ‖ N(z_p, σ_p²I_d)) in nats (:func:`~pacbayes_sft.posteriors.kl.kl_divergence`)."""
        return kl_divergence(self, prior)


@register_kl(SubspacePosterior, Prior)
def _kl_subspace(q: SubspacePosterior, p: Prior) -> float:
    """½ [d (s²/σ_p² − 1 + ln(σ_p²/s²)) + ‖z* − z_p‖²/σ_p²] nats, s = q.sigma, σ_p = p.sigma (or s),
    z_p the subspace's own prior centre (0 unless :meth:`LoRASubspace.fix_prior_centre` moved it)."""
    if p.centre is not None or p.init is not None:
        raise ValueError("a subspace prior is centred at the subspace's own centre: pass Prior(sigma=...) only")
    sub = q.subspace
    return subspace_kl(sub.z.detach().double() - sub.centre.double(), p.scale(q.sigma), q.sigma)
