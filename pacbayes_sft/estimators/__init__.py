"""Estimators of the bound's terms: Gaussian and LoRA KL, posterior sampling and Monte-Carlo
risk, TV proxies, difficulty measures and IRT."""

from .answers import GeneratedAnswers, canonical_answer, collect_answers, collect_draws, igsm_extractor
from .classifier_tv import ClassifierTV, classifier_tv
from .gaussian_kl import gaussian_kl, isotropic_kl_from_sq_norm
from .histogram_tv import histogram_tv
from .irt import IRTResult, fit_irt, response_matrix
from .label_free import ATC, DoC, LabelFreeEstimate, seed_disagreement
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
    "ATC",
    "ClassifierTV",
    "DoC",
    "GeneratedAnswers",
    "IRTResult",
    "LabelFreeEstimate",
    "LoraFactor",
    "canonical_answer",
    "classifier_tv",
    "collect_answers",
    "collect_draws",
    "fit_irt",
    "gaussian_kl",
    "histogram_tv",
    "igsm_extractor",
    "init_state_from_factors",
    "isotropic_kl_from_sq_norm",
    "load_adapter_state",
    "lora_delta_sq_norm",
    "lora_delta_sq_norms",
    "lora_factors",
    "lora_kl",
    "response_matrix",
    "seed_disagreement",
]
