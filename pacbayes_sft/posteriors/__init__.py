"""Posterior families over a LoRA-adapted model and the priors they are measured against: the one
home of the posterior concept.

- :mod:`.base`: the :class:`Posterior` protocol, the Gaussian :class:`Prior` and a
  :class:`PosteriorFamily` (σ grid, posterior(σ, seed), kl(σ)) — what the certificate evaluates;
- :mod:`.kl`: the registry of closed-form KLs (:func:`register_kl`, :func:`kl_divergence`) and the
  diagonal-Gaussian KL maths;
- :mod:`.lora`: ‖ΔW‖ of LoRA modules, their isotropic KL and the RMS a relative σ grid scales;
- :mod:`.isotropic`: N(θ_adapter, σ²I), the default family (:func:`isotropic_family`);
- :mod:`.learned`: per-module scales fitted by a PAC-Bayes objective;
- :mod:`.subspace`: Gaussians in a random subspace of the LoRA factors.

The layer sits above :mod:`pacbayes_sft.adapters` (whose :func:`lora_layers` is the one walk over
a model's LoRA layers) and below ``training`` (which fits a family's parameters), ``estimators``
and ``certify`` (which draw from and charge for them).
"""

from ..adapters import lora_layers
from .base import Posterior, PosteriorFamily, Prior
from .isotropic import GaussianPosterior, isotropic_family
from .kl import gaussian_kl, isotropic_kl_from_sq_norm, kl_divergence, register_kl, sum_sq_diff
from .learned import LearnedGaussianLoRA, learned_family, learned_kl
from .lora import lora_delta_sq_norm, lora_delta_sq_norms, lora_kl, lora_scales_kl, module_family, prior_centre_rms
from .subspace import LoRASubspace, SubspacePosterior, subspace_kl

__all__ = [
    "GaussianPosterior",
    "LearnedGaussianLoRA",
    "LoRASubspace",
    "Posterior",
    "PosteriorFamily",
    "Prior",
    "SubspacePosterior",
    "gaussian_kl",
    "isotropic_family",
    "isotropic_kl_from_sq_norm",
    "kl_divergence",
    "learned_family",
    "learned_kl",
    "lora_delta_sq_norm",
    "lora_delta_sq_norms",
    "lora_kl",
    "lora_layers",
    "lora_scales_kl",
    "module_family",
    "prior_centre_rms",
    "register_kl",
    "subspace_kl",
    "sum_sq_diff",
]
