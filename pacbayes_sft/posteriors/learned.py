"""The learned posterior family: N(μ, diag s_m²) over the LoRA factors, one scale s_m per adapted
module, against the prior N(θ₀, σ_p² I) (Pérez-Ortiz et al. 2021 style; the objective that fits
it is :mod:`pacbayes_sft.training.pacbayes_objective`):

    KL(π ‖ π_pre) = Σ_m ½ [ d_m (s_m²/σ_p² − 1 + ln(σ_p²/s_m²)) + ‖μ_m − θ₀_m‖² / σ_p² ]   (nats)

While it is trained, :class:`LearnedGaussianLoRA` parametrises every factor as W = μ + exp(ρ)·ε
(the reparameterisation trick) and its :meth:`~LearnedGaussianLoRA.kl` is differentiable. Once
trained, the posterior is an isotropic-per-module :class:`~.isotropic.GaussianPosterior` with the
learned scales (:func:`learned_family`), whose KL is the same closed form (:func:`learned_kl`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from ..adapters import _strip, lora_modules
from .base import PosteriorFamily, Prior
from .isotropic import GaussianPosterior
from .lora import lora_scales_kl


class _Perturb(torch.nn.Module):
    """Parametrisation W = μ + exp(ρ)·ε, with ε a buffer set by :meth:`LearnedGaussianLoRA.draw`."""

    def __init__(self, rho: torch.nn.Parameter, shape: torch.Size):
        super().__init__()
        self.rho = rho
        self.register_buffer("eps", torch.zeros(shape, device=rho.device))  # beside the factor, on its device

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(self.rho) * self.eps


class LearnedGaussianLoRA(torch.nn.Module):
    """Per-module posterior scales over the LoRA factors of a peft model (see the module docstring)."""

    def __init__(self, peft_model: torch.nn.Module, prior_sigma: float, init_scale: float = 0.5, *, centre):
        """``centre``: where the prior sits, which must not depend on the data the bound uses.
        A mapping ``module.lora_A`` / ``module.lora_B`` → tensor: the adapter's initial factors
        (:func:`~pacbayes_sft.adapters.load_init_factors`), or the factors of an adapter trained
        on held-out data (a data-dependent prior). ``"current"`` takes the factors' values now,
        which is valid only while they are still at their initialisation (a fresh adapter)."""
        from torch.nn.utils import parametrize

        super().__init__()
        if not (isinstance(centre, str) and centre == "current") and not hasattr(centre, "keys"):
            raise ValueError(f"centre must be 'current' or a mapping of factors, got {type(centre).__name__}")
        self.prior_sigma = float(prior_sigma)
        self.rho = torch.nn.ParameterDict()
        self.names: list[str] = []
        self.module_names: dict[str, str] = {}
        self._init: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._weights: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        for name, a, b in lora_modules(peft_model):
            key = name.replace(".", "_")
            device = a.weight.device
            self.rho[key] = torch.nn.Parameter(torch.tensor(math.log(init_scale * prior_sigma), device=device))
            if isinstance(centre, str) and centre == "current":
                self._init[key] = (a.weight.detach().clone(), b.weight.detach().clone())
            else:
                short = _strip(name)
                if short + ".lora_A" not in centre:
                    raise ValueError(f"centre has no factors for module {short!r}")
                self._init[key] = (
                    centre[short + ".lora_A"].detach().to(device).clone(),
                    centre[short + ".lora_B"].detach().to(device).clone(),
                )
            for mod in (a, b):
                parametrize.register_parametrization(mod, "weight", _Perturb(self.rho[key], mod.weight.shape))
            self._weights[key] = (a, b)
            self.names.append(key)
            self.module_names[key] = name
        if not self.names:
            raise ValueError("model has no LoRA layers")

    def means(self) -> list[torch.Tensor]:
        return [
            p
            for a, b in self._weights.values()
            for p in (a.parametrizations.weight.original, b.parametrizations.weight.original)
        ]

    def scales(self) -> dict[str, float]:
        return {k: math.exp(v.item()) for k, v in self.rho.items()}

    def module_scales(self) -> dict[str, float]:
        """Posterior scale per module, keyed by the module's name in the model (for sampling)."""
        return {self.module_names[k]: v for k, v in self.scales().items()}

    def kl(self) -> torch.Tensor:
        """KL(posterior ‖ prior) in nats (closed form, differentiable in μ and ρ)."""
        sp2 = self.prior_sigma**2
        total = torch.zeros((), dtype=torch.float64, device=next(iter(self.rho.values())).device)
        for key, (a, b) in self._weights.items():
            a0, b0 = self._init[key]
            mu_a, mu_b = a.parametrizations.weight.original, b.parametrizations.weight.original
            d = mu_a.numel() + mu_b.numel()
            s2 = torch.exp(2 * self.rho[key].double())
            dist = ((mu_a - a0).double() ** 2).sum() + ((mu_b - b0).double() ** 2).sum()
            total = total + 0.5 * (d * (s2 / sp2 - 1 + torch.log(sp2 / s2)) + dist / sp2)
        return total

    def draw(self, generator: torch.Generator | None = None, *, zero: bool = False) -> None:
        """Set every ε to a fresh N(0, I) draw (or to 0: the posterior mean)."""
        for a, b in self._weights.values():
            for mod in (a, b):
                p = mod.parametrizations.weight[0]
                # drawn on the (CPU) generator, then moved: the same draws on every device
                p.eps = torch.zeros_like(p.eps) if zero else torch.randn(p.eps.shape, generator=generator).to(p.eps.device)

    @contextmanager
    def at_mean(self) -> Iterator[None]:
        self.draw(zero=True)
        yield

    def prior(self) -> Prior:
        """The prior N(centre, σ_p² I) this posterior is trained against (centre: the factors it was
        given, keyed ``module.lora_A`` / ``module.lora_B``)."""
        centre = {}
        for key, (a0, b0) in self._init.items():
            short = _strip(self.module_names[key])
            centre[short + ".lora_A"], centre[short + ".lora_B"] = a0, b0
        return Prior(sigma=self.prior_sigma, init=centre)

    def remove(self) -> None:
        """Drop the parametrisations, leaving the means as the LoRA weights."""
        from torch.nn.utils import parametrize

        for a, b in self._weights.values():
            for mod in (a, b):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)


def learned_kl(posterior_mean: Any, prior_centre: Any, scales: dict[str, float], sigma_p: float) -> float:
    """KL(N(Q, diag s²) ‖ N(P, σ_p² I)) over the LoRA factors, in nats, from the two adapters
    (models or folders; the centre may also be a mapping of initial factors) and the per-module
    scales s_m (keyed by module name, with or without the peft prefix): the closed form of
    :func:`~pacbayes_sft.posteriors.lora.lora_scales_kl`."""
    return lora_scales_kl(posterior_mean, prior_centre, scales, sigma_p)


def learned_family(
    model: torch.nn.Module,
    scales: Mapping[str, float],
    prior: Prior,
    *,
    kl: float | None = None,
    space: str = "lora (learned per-module posterior scales)",
) -> PosteriorFamily:
    """The family of one learned posterior: the grid is σ_p alone (fixed before training, K = 1),
    the posterior N(μ = the model's factors, diag s_m²) and its KL to ``prior`` in nats — ``kl``
    when already computed (e.g. by the trainer), else the closed form."""
    if prior.sigma is None:
        raise ValueError("prior.sigma (sigma_p, fixed before training) is required for a learned posterior")
    value = GaussianPosterior(model, dict(scales), "lora").kl(prior) if kl is None else float(kl)
    return PosteriorFamily(
        space=space,
        grid=[prior.sigma],
        posterior=lambda _sigma, seed: GaussianPosterior(model, dict(scales), "lora", seed=seed),
        kl=lambda _sigma: value,
    )
