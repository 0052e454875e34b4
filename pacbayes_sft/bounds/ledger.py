"""Confidence accounting: how the failure probability δ is split among the terms of a bound.

A certificate combines several high-probability statements (the PAC-Bayes bound itself, the
Monte-Carlo estimate of the stochastic risk, a union over prior scales chosen from data, a TV
interval). By the union bound the total failure probability is at most the sum of the parts;
:class:`DeltaLedger` records every part and refuses a total above the δ the user asked for.

Prior-scale grids:

- finite grid of K scales: each point is charged δ/K;
- Dziugaite–Roy geometric grid λ_j = c·e^{−j/b}, j = 1, 2, ...: point j is charged
  δ_j = 6δ/(π² j²), which sums to δ over j ≥ 1. The index is clamped to j ≥ 1 (their public
  code produced NaN for j ≤ 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ._validate import check_delta, check_positive

_REL_TOL = 1e-12


@dataclass
class DeltaLedger:
    """Record of how a total failure probability ``delta`` is spent.

    >>> ledger = DeltaLedger(0.05)
    >>> d_mc = ledger.spend("mc_sampling", 0.01)
    >>> d_bound = ledger.spend_rest("pac_bayes")
    """

    delta: float
    entries: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.delta = float(check_delta(self.delta, "delta"))

    @property
    def spent(self) -> float:
        return math.fsum(amount for _, amount in self.entries)

    @property
    def remaining(self) -> float:
        return max(self.delta - self.spent, 0.0)

    def spend(self, name: str, amount: float) -> float:
        """Charge ``amount`` to term ``name``; refuse if the total would exceed ``delta``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if any(existing == name for existing, _ in self.entries):
            raise ValueError(f"name {name!r} has already been charged in this ledger")
        amt = float(check_delta(amount, "amount"))
        if self.spent + amt > self.delta * (1.0 + _REL_TOL):
            raise ValueError(
                f"amount {amt:g} for {name!r} would spend {self.spent + amt:g} in total, "
                f"more than delta = {self.delta:g}"
            )
        self.entries.append((name, amt))
        return amt

    def spend_fraction(self, name: str, fraction: float) -> float:
        """Charge ``fraction`` of the *total* δ to ``name``."""
        try:
            frac = float(fraction)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}") from exc
        if not 0.0 < frac <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction!r}")
        return self.spend(name, frac * self.delta)

    def spend_rest(self, name: str) -> float:
        """Charge everything not yet spent to ``name``."""
        rest = self.delta - self.spent
        if rest <= self.delta * _REL_TOL:
            raise ValueError(f"nothing left of delta = {self.delta:g} to charge to {name!r}")
        self.entries.append((name, rest))
        return rest

    def to_dict(self) -> dict:
        return {
            "delta": self.delta,
            "spent": self.spent,
            "entries": [{"term": name, "delta": amount} for name, amount in self.entries],
        }


def finite_grid_delta(delta: float, k: int) -> float:
    """Confidence per point of a K-point grid chosen after seeing the data: δ/K."""
    d = float(check_delta(delta))
    if not isinstance(k, (int,)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return d / k


def dziugaite_roy_delta(delta: float, j: int) -> float:
    """δ_j = 6δ/(π² j²) for grid index j, with j clamped to ≥ 1 (Σ_{j≥1} δ_j = δ)."""
    d = float(check_delta(delta))
    jj = max(int(j), 1)
    return 6.0 * d / (math.pi**2 * jj**2)


def dziugaite_roy_grid(scale: float, c: float, b: float, delta: float) -> tuple[int, float, float]:
    """Snap a prior scale to the geometric grid λ_j = c·e^{−j/b} and return (j, λ_j, δ_j).

    j = round(b·ln(c/scale)), clamped to j ≥ 1 so that δ_j is finite and the grid sums to δ.
    """
    s = float(check_positive(scale, "scale"))
    cc = float(check_positive(c, "c"))
    bb = float(check_positive(b, "b"))
    j = max(round(bb * math.log(cc / s)), 1)
    return j, cc * math.exp(-j / bb), dziugaite_roy_delta(delta, j)
