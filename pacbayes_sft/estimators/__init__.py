"""Estimators of the bound's terms: Gaussian and LoRA KL, posterior sampling and Monte-Carlo
risk, TV proxies, difficulty measures and IRT."""

from .gaussian_kl import gaussian_kl, isotropic_kl_from_sq_norm
from .histogram_tv import histogram_tv
from .lora import (
    LoraFactor,
    init_state_from_factors,
    load_adapter_state,
    lora_delta_sq_norm,
    lora_delta_sq_norms,
    lora_factors,
    lora_kl,
)

__all__ = [
    "LoraFactor",
    "gaussian_kl",
    "histogram_tv",
    "init_state_from_factors",
    "isotropic_kl_from_sq_norm",
    "load_adapter_state",
    "lora_delta_sq_norm",
    "lora_delta_sq_norms",
    "lora_factors",
    "lora_kl",
]
