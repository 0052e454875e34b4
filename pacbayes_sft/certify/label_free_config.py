"""The settings of the label-free estimates of a test risk: which estimators, the posterior draws
they read, the TV proxy and generation, and the estimators' own settings (torch-free).

:class:`LabelFreeConfig` extends
:class:`~pacbayes_sft.estimators.label_free.EstimatorSettings` (δ, β, q, bootstrap, seed), so the
same object goes to the collector of inputs and to every estimator's ``fn``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .. import defaults
from ..config import option
from ..estimators.label_free.specs import EstimatorSettings, check_names
from .config import SPACES, EvalConfig, TVConfig

__all__ = ["INPUT_REQUIRES", "LabelFreeConfig", "with_options"]

INPUT_REQUIRES: Mapping[str, tuple[str, ...]] = {
    "target_conf": (), "target_answers": (), "target_prompts": (), "target_answer_conf": (),
    "source_answer_conf": ("source",),
    "source_conf": ("source",), "source_correct": ("source",), "source_answers": ("source",),
    "source_prompts": ("source",), "source_slices": ("source",), "tv": ("source",),
    "pool_prompts": ("pool",), "pool_slices": ("pool",), "pool_correct": ("pool",),
    "source_draws": ("source", "sigma"), "target_draws": ("sigma",), "seed_answers": ("seeds_adapters",),
}  # fmt: skip
"""What the caller must give for the collector to produce each input: labelled ``source``
examples, a labelled ``pool`` of every difficulty, a posterior scale ``sigma`` > 0, or other seeds'
adapters."""


def _check_sigma(sigma: Any) -> None:
    def ok(x: Any) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x >= 0

    if sigma is None or ok(sigma) or (isinstance(sigma, Mapping) and sigma and all(ok(v) for v in sigma.values())):
        return
    raise ValueError(f"sigma must be a finite number >= 0, a mapping of layer name to such, or None; got {sigma!r}")


@dataclass
class LabelFreeConfig(EstimatorSettings):
    """How the label-free estimates of an adapter's test risk are collected and computed."""

    estimators: list[str] | None = option(None, "Estimator names to compute (default: every one the inputs allow).")
    sigma: float | None = option(
        None, "Posterior scale of N(adapter, sigma^2 I) for the disagreement estimators (absolute; none: no draws)."
    )
    space: str = option(
        "delta", "Posterior space: 'delta' (adapted weights) or 'lora' (adapter factors).", choices=SPACES
    )
    draws: int = option(defaults.LABEL_FREE_DRAWS, "Independent posterior draws per prompt (>= 2).")
    tv: TVConfig = option(help="The classifier TV proxy between the source and the test prompts.", factory=TVConfig)
    evaluation: EvalConfig = option(help="Generation length and batch size.", factory=EvalConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimators is not None:
            if not self.estimators:
                raise ValueError(f"estimators must be a non-empty list of names or None, got {self.estimators!r}")
            self.estimators = check_names(self.estimators, "estimators")
        _check_sigma(self.sigma)
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 2:
            raise ValueError(f"draws must be an integer >= 2, got {self.draws!r}")
        if not isinstance(self.tv, TVConfig) or not isinstance(self.evaluation, EvalConfig):
            raise ValueError("tv must be a TVConfig and evaluation an EvalConfig")

    @property
    def has_draws(self) -> bool:
        """Whether a posterior with σ > 0 is set (the draws' estimators can run)."""
        if isinstance(self.sigma, Mapping):
            return any(v > 0 for v in self.sigma.values())
        return self.sigma is not None and self.sigma > 0

    def describe_risk(self, risk_of: str, n_seeds: int) -> str:
        """Whose risk a row with ``risk_of`` estimates, in words, for these settings."""
        if risk_of == "posterior":
            if not self.has_draws:
                return ""
            scale = f"{self.sigma:g}" if not isinstance(self.sigma, Mapping) else "per layer"
            return f"posterior N(adapter, σ²I), σ = {scale} ({self.space}), {self.draws} draws per item"
        if risk_of == "seeds":
            return f"one of {n_seeds} seed adapters"
        return "adapter"


def with_options(config: LabelFreeConfig | None, options: Mapping[str, Any]) -> LabelFreeConfig:
    """``config`` (default :class:`LabelFreeConfig()`) with the fields in ``options`` replaced;
    ValueError naming an option that is not a field."""
    if config is not None and not isinstance(config, LabelFreeConfig):
        raise ValueError(f"config must be a LabelFreeConfig, got {type(config).__name__}")
    known = {f.name for f in fields(LabelFreeConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (LabelFreeConfig fields: {', '.join(sorted(known))})")
    base = config if config is not None else LabelFreeConfig()
    given = {k: v for k, v in options.items() if not (k in ("tv", "evaluation") and v is None)}
    return replace(base, **given) if given else base
