"""Monte-Carlo slack for the stochastic empirical risk E_π R̂_S.

E_π R̂_S is an expectation over the posterior that is estimated from m posterior samples
θ_1..θ_m. With R̂_m = (1/m) Σ_j R̂_S(θ_j) (each R̂_S(θ_j) in [0, 1]), Langford–Caruana give,
with probability ≥ 1 − δ' over the draws,

    E_π R̂_S ≤ kl⁻¹(R̂_m, ln(2/δ') / m).

Combined with a PAC-Bayes bound at level δ the total confidence is 1 − δ − δ'.

The same interval holds for the mean of N independent losses in [0, 1] with different means
(Chernoff), so the N behind it is either m shared samples, each scoring all n examples
(``"shared"``), or n·d losses when every example gets d draws of its own (``"per_example"``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._validate import ArrayLike, as_float_array, check_delta, check_n, check_unit_interval, to_output
from .kl import kl_inverse_upper

MC_SCHEMES = ("per_example", "shared")
"""How posterior draws are spent on the n examples; see the module docstring."""


def mc_risk_upper(mean_risk: ArrayLike, m: ArrayLike, delta: ArrayLike) -> float | np.ndarray:
    """Upper confidence bound kl⁻¹(R̂_m, ln(2/δ)/m) on the stochastic empirical risk.

    mean_risk: R̂_m in [0, 1], the average over all m posterior samples; m ≥ 1; delta ∈ (0, 1).
    """
    r = check_unit_interval(mean_risk, "mean_risk")
    ma = check_n(m, "m")
    da = check_delta(delta)
    return to_output(np.asarray(kl_inverse_upper(r, np.log(2.0 / da) / ma)))


def mean_over_samples(batches: Iterable[ArrayLike]) -> tuple[float, int]:
    """Average per-sample risks that arrive in batches: returns (R̂_m, m).

    The mean is the total over *all* samples divided by the total count m (a known bug in
    public code divides by the last batch index instead).
    """
    total = 0.0
    count = 0
    for i, batch in enumerate(batches):
        arr = np.atleast_1d(check_unit_interval(batch, f"batches[{i}]"))
        total += float(arr.sum(dtype=np.float64))
        count += arr.size
    if count == 0:
        raise ValueError("batches must contain at least one risk value")
    return total / count, count


def mc_risk_upper_from_samples(risks: ArrayLike | Iterable[ArrayLike], delta: float) -> float:
    """mc_risk_upper of the mean of per-posterior-sample risks (an array, or batches of them)."""
    if isinstance(risks, np.ndarray) or np.isscalar(risks):
        arr = np.atleast_1d(as_float_array(risks, "risks"))
        mean, m = mean_over_samples([arr])
    else:
        mean, m = mean_over_samples(risks)
    return float(mc_risk_upper(mean, m, delta))
