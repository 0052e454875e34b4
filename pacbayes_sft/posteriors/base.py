"""What every posterior family shares: the :class:`Posterior` protocol, the Gaussian :class:`Prior`
it is measured against, and a :class:`PosteriorFamily` (posteriors indexed by a scale σ on a grid
fixed before the data are seen) — the one thing the certificate engine evaluates.

A posterior Q over a model's parameters is anything that can

- ``sample(index)``: a context manager inside which the model computes with draw ``index``;
- ``sample_rows(indices)``: one inside which row r of every batch uses draw ``indices[r]`` (one
  batched pass scores every example under its own draw). A family that can only move the whole
  model at once sets ``per_row = False`` and raises TypeError there; the Monte-Carlo risk then
  scores one example per draw through ``sample``;
- state its ``sigma`` (its scale; the mean scale when it has one per module) and ``space``;
- ``kl(prior)``: KL(Q ‖ P) in nats, by the closed form :func:`~.kl.register_kl` records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior N(centre, σ_p² I) over a posterior's parameter space, fixed before the data
    the bound uses are seen.

    Args:
        sigma: σ_p > 0, or None for "the posterior's own scale" (the isotropic grid, where prior and
            posterior share σ and the KL is ‖μ_q − μ_p‖²/(2σ²)).
        centre: where the prior sits when it is data-dependent: an adapter (directory or peft
            model) trained on examples the bound never uses. None: the family's data-free centre
            (the pretrained weights in the "delta" space, the initial factors in "lora", z = the
            subspace's own centre in a random subspace).
        init: the adapter's initial factors (path, peft model or mapping of ``module.lora_A`` /
            ``module.lora_B`` tensors) — the data-free centre in the "lora" space.
    """

    sigma: float | None = None
    centre: Any = None
    init: Any = None

    def __post_init__(self) -> None:
        if self.sigma is not None:
            s = self.sigma
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise ValueError(f"prior sigma must be a finite number > 0 or None, got {s!r}")

    def scale(self, posterior_sigma: float) -> float:
        """σ_p, or the posterior's scale when the prior takes it (``sigma=None``)."""
        return float(posterior_sigma if self.sigma is None else self.sigma)


@runtime_checkable
class Posterior(Protocol):
    """A distribution over a model's parameters that the Monte-Carlo risk can draw from and the
    bound can charge for (module docstring)."""

    sigma: float
    space: str
    per_row: bool

    def sample(self, index: int) -> AbstractContextManager[torch.nn.Module]: ...

    def sample_rows(self, indices: Sequence[int]) -> AbstractContextManager[torch.nn.Module]: ...

    def kl(self, prior: Prior) -> float: ...


@dataclass
class PosteriorFamily:
    """Posteriors indexed by a scale σ: the σ grid (each point charged δ/K), how to build the
    posterior at σ with a seed, and its KL to the prior in nats.

    ``posterior(σ, seed)`` returns a :class:`Posterior`; σ is a grid point or, for the isotropic
    family's per-module search, a mapping module name → σ. ``space`` is what the certificate states."""

    space: str
    grid: list[float]
    posterior: Callable[[Any, int], Any]
    kl: Callable[[Any], float]

    def __post_init__(self) -> None:
        if not isinstance(self.space, str) or not self.space:
            raise ValueError(f"family space must be a non-empty string, got {self.space!r}")
        grid = list(self.grid)
        if not grid or any(isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0 for g in grid):
            raise ValueError(f"family grid must be a non-empty list of numbers > 0, got {self.grid!r}")
        if not (callable(self.posterior) and callable(self.kl)):
            raise ValueError("family posterior and kl must be callables: posterior(sigma, seed), kl(sigma)")
        self.grid = [float(g) for g in grid]


def check_sigma(sigma: Any, name: str = "sigma") -> float:
    """σ as a float ≥ 0; ValueError naming ``name`` otherwise."""
    try:
        s = float(sigma)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number >= 0, got {sigma!r}") from exc
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {sigma!r}")
    return s
