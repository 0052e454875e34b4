"""The certificate of one adapter, one module per concept:

- :mod:`.config`: :class:`BoundConfig`, :class:`TVConfig`, :class:`EvalConfig`, :class:`PriorConfig` (no torch);
- :mod:`.certificate`: the typed :class:`Certificate` record (no torch);
- :mod:`.losses`: the bounded losses on a list of examples;
- :mod:`.engine`: the δ plan, the σ grid and :func:`certificate_core` over a posterior family
  (:mod:`pacbayes_sft.posteriors`; ``PosteriorFamily`` is re-exported here);
- :mod:`.stochastic`: the stochastic model's risk and the certificate of a learned posterior;
- :mod:`.tv_term`: the classifier TV proxy as a TV term;
- :mod:`.api`: :func:`certify` (load → losses → TV → core).

The torch-free modules are imported here; the others on first use of one of their names
(PEP 562), so ``pacbayes_sft.certify.config`` (read by the sweep's config layer) loads no torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports
from .certificate import (
    SCHEMA_VERSION,
    Certificate,
    DeltaSplit,
    EmpiricalRisk,
    GenGap,
    KLTerm,
    SigmaChoice,
    TVTerm,
)
from .config import (
    DEFAULT_SIGMA_MULTIPLES,
    LOSSES,
    SIGMA_RULES,
    SPACES,
    BoundConfig,
    CertifySettings,
    EvalConfig,
    PriorConfig,
    TVConfig,
)

_LAZY = {
    "api": ("certify",),
    "engine": ("DeltaPlan", "GridOptions", "PosteriorFamily", "certificate_core", "plan_delta"),
    "label_free": ("estimate_test_risk",),
    "label_free_config": ("LabelFreeConfig",),
    "losses": ("Losses", "answer_losses", "example_losses", "teacher_forced_losses"),
    "stochastic": ("StochasticRisk", "certify_learned_posterior", "stochastic_risk"),
}
# The public API only; helpers (numbers, capped, sigma_grid, ...) are imported from their modules.
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_SIGMA_MULTIPLES",
    "LOSSES",
    "SCHEMA_VERSION",
    "SIGMA_RULES",
    "SPACES",
    "BoundConfig",
    "Certificate",
    "CertifySettings",
    "DeltaPlan",
    "DeltaSplit",
    "EmpiricalRisk",
    "EvalConfig",
    "GenGap",
    "GridOptions",
    "KLTerm",
    "LabelFreeConfig",
    "Losses",
    "PosteriorFamily",
    "PriorConfig",
    "SigmaChoice",
    "StochasticRisk",
    "TVConfig",
    "TVTerm",
    "answer_losses",
    "certificate_core",
    "certify",
    "certify_learned_posterior",
    "estimate_test_risk",
    "example_losses",
    "plan_delta",
    "stochastic_risk",
    "teacher_forced_losses",
]
