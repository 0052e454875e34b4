"""The two-gap bound of arXiv 2605.12906, Proposition 4.1.

    E_{θ~π}[R_test(θ)] ≤ E_{θ~π}[R̂_S(θ)] + G_gen + G_ext + ε

- G_gen = PAC-Bayes bound on E_π R_train minus E_π R̂_S (the generalisation gap, from KL and n);
- G_ext = (b − a)·TV(D_test, D_train): for every θ, f = ℓ(θ,·) ∈ [a, b] gives
  |E_test f − E_train f| ≤ (b − a)·TV, and integrating over π keeps the inequality;
- ε = whatever slack the caller adds (Monte-Carlo slack on E_π R̂_S, TV-estimate slack).

The sum is a certified bound only when every term is: a TV from a classifier two-sample test
is a *proxy* (its unclipped held-out value is a lower bound on the true TV in expectation; the
clipped value G_ext uses is biased up near TV = 0), so a total built on it is an
estimate. :class:`TwoGapBound` carries which terms are certified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import defaults
from ._validate import as_float_array, check_delta, check_loss_range, check_n, check_nonnegative
from .pacbayes import BOUNDS, pac_bayes_bound


@dataclass(frozen=True)
class TwoGapBound:
    """Terms of Proposition 4.1 (risks in loss units, KL in nats)."""

    emp_risk: float
    g_gen: float
    g_ext: float
    eps: float
    total: float
    kl: float
    n: float
    tv: float
    delta: float
    method: str
    loss_range: tuple[float, float] = (0.0, 1.0)
    tv_certified: bool = False
    certified_terms: tuple[str, ...] = field(default=())
    estimated_terms: tuple[str, ...] = field(default=())

    @property
    def certified(self) -> bool:
        """True only when every term of the total is certified (never with a TV proxy)."""
        return not self.estimated_terms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loss_range"] = list(self.loss_range)
        d["certified_terms"] = list(self.certified_terms)
        d["estimated_terms"] = list(self.estimated_terms)
        d["certified"] = self.certified
        return d


def two_gap_bound(
    emp_risk: float,
    kl: float,
    n: float,
    tv: float,
    delta: float = defaults.DELTA,
    method: str = "seeger",
    loss_range: tuple[float, float] = (0.0, 1.0),
    eps: float = 0.0,
    *,
    C: float | None = None,
    tv_certified: bool = False,
) -> TwoGapBound:
    """Assemble Proposition 4.1: total = emp_risk + G_gen + G_ext + eps.

    Args:
        emp_risk: E_π R̂_S in loss units (a point value or a Monte-Carlo upper bound).
        kl: KL(π_train ‖ π_pre) in nats.
        n: number of training examples.
        tv: TV(D_test, D_train) ∈ [0, 1] (or a proxy of it; see ``tv_certified``).
        delta: confidence parameter of the PAC-Bayes term.
        method: one of "seeger", "maurer", "catoni", "lambda", "quad".
        loss_range: (a, b) with the loss in [a, b]; G_ext = (b − a)·tv.
        eps: extra slack ≥ 0 added to the total.
        C: Catoni's constant, required for method="catoni".
        tv_certified: True only if ``tv`` is a certified upper bound on the true TV.
    """
    if not isinstance(method, str) or method not in BOUNDS:
        raise ValueError(f"method must be one of {sorted(BOUNDS)}, got {method!r}")
    a, b = check_loss_range(loss_range)
    r = float(as_float_array(emp_risk, "emp_risk"))
    kl_f = float(check_nonnegative(kl, "kl"))
    n_f = float(check_n(n))
    tv_f = float(as_float_array(tv, "tv"))
    if not 0.0 <= tv_f <= 1.0:
        raise ValueError(f"tv must lie in [0, 1], got {tv!r}")
    d = float(check_delta(delta))
    eps_f = float(check_nonnegative(eps, "eps"))
    if not isinstance(tv_certified, bool):
        raise ValueError(f"tv_certified must be a bool, got {tv_certified!r}")

    upper = float(pac_bayes_bound(method, r, kl_f, n_f, d, loss_range=(a, b), C=C))
    g_gen = upper - r
    g_ext = (b - a) * tv_f
    certified = ["emp_risk", "g_gen"]
    estimated = []
    (certified if tv_certified else estimated).append("g_ext")
    if eps_f > 0:
        certified.append("eps")
    return TwoGapBound(
        emp_risk=r,
        g_gen=g_gen,
        g_ext=g_ext,
        eps=eps_f,
        total=r + g_gen + g_ext + eps_f,
        kl=kl_f,
        n=n_f,
        tv=tv_f,
        delta=d,
        method=method,
        loss_range=(a, b),
        tv_certified=tv_certified,
        certified_terms=tuple(certified),
        estimated_terms=tuple(estimated),
    )


_TERM_NAMES = {"emp_risk": "empirical risk", "g_gen": "G_gen", "g_ext": "G_ext", "eps": "eps"}


def is_vacuous(emp_risk_upper, g_gen, top: float = 1.0):
    """Whether a certified bound U + G_gen has reached the top of the loss range (it then says
    nothing, and G_gen = top − U is not a small gap). Scalars or arrays (elementwise)."""
    return np.asarray(emp_risk_upper) + np.asarray(g_gen) >= top - 1e-9


def describe_certification(certified_terms: Sequence[str], estimated_terms: Sequence[str]) -> str:
    """One line saying which terms (``emp_risk``, ``g_gen``, ``g_ext``, ``eps``) of a two-gap
    total are certified and, therefore, what the total is."""
    cert = ", ".join(_TERM_NAMES[t] for t in certified_terms) or "none"
    if not estimated_terms:
        return f"certified: {cert} -> the total is a certified bound"
    est = ", ".join(_TERM_NAMES[t] for t in estimated_terms)
    return f"certified: {cert}; estimated: {est} (TV proxy) -> the total is an estimate, NOT a certified bound"


def certification_statement(bound: TwoGapBound) -> str:
    """:func:`describe_certification` of a :class:`TwoGapBound`."""
    return describe_certification(bound.certified_terms, bound.estimated_terms)
