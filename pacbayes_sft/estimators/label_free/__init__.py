"""Label-free estimates of a model's test error from its answers and confidences on test prompts.

- :mod:`.methods`: the estimators themselves (ATC, DoC, seed disagreement), numpy only;
- :mod:`.specs`: the one registry of estimators (:class:`EstimatorSpec`, :data:`ESTIMATORS`,
  :func:`register_estimator`), the inputs they read (:class:`LabelFreeInputs`) and
  :func:`label_free_estimates`, which runs them.
"""

from ...bounds.domain_adaptation import LabelFreeEstimate
from .methods import ATC, DoC, atc_threshold, seed_disagreement
from .specs import (
    ESTIMATORS,
    INPUT_NAMES,
    RISKS,
    EstimatorSettings,
    EstimatorSpec,
    LabelFreeInputs,
    check_names,
    inputs_needed,
    label_free_estimates,
    register_estimator,
    unregister_estimator,
)

__all__ = [
    "ATC",
    "ESTIMATORS",
    "INPUT_NAMES",
    "RISKS",
    "DoC",
    "EstimatorSettings",
    "EstimatorSpec",
    "LabelFreeEstimate",
    "LabelFreeInputs",
    "atc_threshold",
    "check_names",
    "inputs_needed",
    "label_free_estimates",
    "register_estimator",
    "seed_disagreement",
    "unregister_estimator",
]
