"""Estimators of the bound's terms: Monte-Carlo risk of a posterior (the posteriors and their KLs:
:mod:`pacbayes_sft.posteriors`), TV proxies, difficulty measures and IRT."""

from ..adapters import LoraFactor, init_state_from_factors, load_adapter_state, lora_factors

# The posterior's KL maths live in pacbayes_sft.posteriors; re-exported here for the public API.
from ..posteriors.kl import gaussian_kl, isotropic_kl_from_sq_norm
from ..posteriors.lora import lora_delta_sq_norm, lora_delta_sq_norms, lora_kl
from .answers import GeneratedAnswers, canonical_answer, collect_answers, collect_draws, igsm_extractor
from .classifier_tv import ClassifierTV, classifier_tv
from .histogram_tv import histogram_tv
from .irt import IRTResult, fit_irt, response_matrix
from .label_free import ATC, DoC, EstimatorSpec, LabelFreeEstimate, register_estimator, seed_disagreement

__all__ = [
    "ATC",
    "ClassifierTV",
    "DoC",
    "EstimatorSpec",
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
    "register_estimator",
    "response_matrix",
    "seed_disagreement",
]
