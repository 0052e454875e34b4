"""Exact total variations between Gaussians, the known truth that TV estimators are checked against."""

from __future__ import annotations

import math

from scipy.stats import norm


def exact_gaussian_tv(mu: float) -> float:
    """TV(N(0, 1), N(μ, 1)) = 2Φ(|μ|/2) − 1."""
    return math.erf(abs(mu) / (2 * math.sqrt(2)))


def exact_gaussian_scale_tv(sd: float) -> float:
    """TV(N(0, 1), N(0, s²)) for s ≠ 1: the densities cross at ±x with x² = 2 ln(s) s² / (s² − 1),
    so TV = 2(Φ(x) − Φ(x/s)) (up to sign, for s < 1)."""
    if not sd > 0:
        raise ValueError(f"sd must be > 0, got {sd!r}")
    if sd == 1.0:
        return 0.0
    x = math.sqrt(2 * math.log(sd) * sd * sd / (sd * sd - 1))
    return abs(2 * (norm.cdf(x) - norm.cdf(x / sd)))
