"""PAC-Bayes bounds, binary-KL inverses, confidence accounting and the two-gap bound.

Pure numpy/scipy: this package imports no torch.
"""

from .domain_adaptation import (
    LabelFreeEstimate,
    PosteriorDraws,
    disagreement_form_2013,
    half_disagreement_lower,
    joint_error_form_2016,
    proportion_interval,
)
from .kl import kl_bernoulli, kl_inverse_lower, kl_inverse_upper
from .ledger import DeltaLedger, dziugaite_roy_delta, dziugaite_roy_grid, finite_grid_delta
from .mc import MC_SCHEMES, mc_risk_upper, mc_risk_upper_from_samples, mean_over_samples
from .pacbayes import (
    BOUNDS,
    catoni_bound,
    lambda_bound,
    maurer_bound,
    maurer_complexity,
    optimal_lambda,
    pac_bayes_bound,
    quad_bound,
    register_bound,
    seeger_bound,
    unregister_bound,
)
from .two_gap import TwoGapBound, certification_statement, describe_certification, is_vacuous, two_gap_bound

__all__ = [
    "BOUNDS",
    "MC_SCHEMES",
    "DeltaLedger",
    "LabelFreeEstimate",
    "PosteriorDraws",
    "TwoGapBound",
    "catoni_bound",
    "certification_statement",
    "describe_certification",
    "disagreement_form_2013",
    "dziugaite_roy_delta",
    "dziugaite_roy_grid",
    "finite_grid_delta",
    "half_disagreement_lower",
    "is_vacuous",
    "joint_error_form_2016",
    "kl_bernoulli",
    "kl_inverse_lower",
    "kl_inverse_upper",
    "lambda_bound",
    "maurer_bound",
    "maurer_complexity",
    "mc_risk_upper",
    "mc_risk_upper_from_samples",
    "mean_over_samples",
    "optimal_lambda",
    "pac_bayes_bound",
    "proportion_interval",
    "quad_bound",
    "register_bound",
    "seeger_bound",
    "two_gap_bound",
    "unregister_bound",
]
