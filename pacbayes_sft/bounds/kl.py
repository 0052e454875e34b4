"""Binary relative entropy and its two inverses.

kl(q‖p) = q ln(q/p) + (1−q) ln((1−q)/(1−p))   (nats), with 0·ln 0 = 0.

kl⁻¹ upper:  sup{p ∈ [q, 1] : kl(q‖p) ≤ c}
kl⁻¹ lower:  inf{p ∈ [0, q] : kl(q‖p) ≤ c}

Both inverses are monotone roots of p ↦ kl(q‖p) − c and are found with scipy's vectorised
bracketing root finder, so numpy arrays of any shape are solved in one call (a few roots with
Brent's method, one by one, on the same bracket to a relative tolerance of 4 eps; the two agree to
about 1e-14 relative even at roots near 1e-300, where kl's own rounding limits both). The closed forms
at q ∈ {0, 1} and c = 0 are returned exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq, elementwise

from ._validate import ArrayLike, check_nonnegative, check_unit_interval, to_output

# Root-finding tolerances: drive the bracket down to adjacent floats (f tolerances off).
_TOL = {"xatol": 0.0, "xrtol": 2 * np.finfo(np.float64).eps, "fatol": 0.0, "frtol": 0.0}
_ONE_MINUS = np.nextafter(1.0, 0.0)
_TINY = np.finfo(np.float64).tiny
_FEW = 16  # up to this many roots, Brent's method one by one is faster than the vectorised call
_BRENT_RTOL = 4 * np.finfo(np.float64).eps  # the smallest relative tolerance brentq accepts
_BRENT_ITER = 2000  # bisection alone would need ~1,100 halvings to reach a root near the smallest float


def _kl(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """kl(q‖p) without validation, accurate to a few ulps of each term.

    When q and p are close, each log is taken as log1p of an exact difference,
    q·log1p((q−p)/p) and (1−q)·log1p((p−q)/(1−p)): the naive ln(q/p) rounds q/p to 1 ± eps,
    an absolute error of ~1e-16 that swamps small budgets (c ≈ 1e-8). When they are far
    apart, differences of logs are used instead (log1p(x) near x = −1 would lose everything),
    with log1p(−q) − log1p(−p) so tiny q, p are not rounded away by 1 − q.
    The 0·ln 0 = 0 convention is applied explicitly.
    """
    q, p = np.broadcast_arrays(np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        near_p = np.abs(q - p) < 0.5 * p
        log_ratio = np.where(near_p, np.log1p((q - p) / p), np.log(q) - np.log(p))
        first = np.where(q == 0.0, 0.0, q * log_ratio)
        near_1p = np.abs(p - q) < 0.5 * (1.0 - p)
        log_ratio2 = np.where(near_1p, np.log1p((p - q) / (1.0 - p)), np.log1p(-q) - np.log1p(-p))
        second = np.where(q == 1.0, 0.0, (1.0 - q) * log_ratio2)
    return first + second


def kl_bernoulli(q: ArrayLike, p: ArrayLike) -> float | np.ndarray:
    """Binary KL divergence kl(q‖p) in nats, for q, p in [0, 1] (broadcast).

    Returns +inf where p ∈ {0, 1} and q ≠ p (the divergence is infinite there).
    """
    qa = check_unit_interval(q, "q")
    pa = check_unit_interval(p, "p")
    return to_output(_kl(qa, pa))


def _solve(q: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Roots of p ↦ kl(q‖p) − c in [lo, hi]: Brent's method one by one for a few (the vectorised
    solver costs milliseconds a call whatever its size), the vectorised solver for many."""
    if q.size <= _FEW:
        f = lambda p, q, c: float(_kl(q, p)) - c  # noqa: E731
        return np.array([brentq(f, a, b, args=(qi, ci), xtol=_TINY, rtol=_BRENT_RTOL, maxiter=_BRENT_ITER)
                         for qi, ci, a, b in zip(q, c, lo, hi)], dtype=np.float64)  # fmt: skip
    with np.errstate(all="ignore"):  # the solver's interpolation test may touch inf/NaN internally
        res = elementwise.find_root(lambda p, q, c: _kl(q, p) - c, (lo, hi), args=(q, c), tolerances=_TOL)
    return np.asarray(res.x, dtype=np.float64)


def kl_inverse_upper(q: ArrayLike, c: ArrayLike) -> float | np.ndarray:
    """Upper inverse of the binary KL: sup{p ∈ [q, 1] : kl(q‖p) ≤ c}.

    q is an empirical risk in [0, 1], c ≥ 0 a budget in nats (c = +inf gives 1).
    Exact closed forms: q = 0 gives 1 − e^{−c}; q = 1 gives 1; c = 0 gives q.
    When the root is closer to 1 than float64 resolves, 1.0 is returned (still a valid bound).
    """
    qa = check_unit_interval(q, "q")
    ca = check_nonnegative(c, "c", allow_inf=True)
    qa, ca = np.broadcast_arrays(qa, ca)
    out = np.empty(qa.shape, dtype=np.float64)

    zero_q = qa == 0.0
    out[zero_q] = -np.expm1(-ca[zero_q])
    at_one = (qa == 1.0) | (np.isinf(ca) & ~zero_q)
    out[at_one] = 1.0
    no_budget = (ca == 0.0) & ~zero_q & ~at_one
    out[no_budget] = qa[no_budget]

    rest = ~(zero_q | at_one | no_budget)
    if rest.any():
        qr, cr = qa[rest], ca[rest]
        # If even p = 1⁻ keeps kl ≤ c, the supremum is within one ulp of 1.
        saturated = _kl(qr, np.full_like(qr, _ONE_MINUS)) <= cr
        sol = np.ones_like(qr)
        solve = ~saturated
        if solve.any():
            sol[solve] = _solve(qr[solve], cr[solve], qr[solve], np.full(solve.sum(), _ONE_MINUS))
        out[rest] = np.maximum(sol, qr)  # the root lies in [q, 1]; guard against round-off
    return to_output(out)


def kl_inverse_lower(q: ArrayLike, c: ArrayLike) -> float | np.ndarray:
    """Lower inverse of the binary KL: inf{p ∈ [0, q] : kl(q‖p) ≤ c}.

    Exact closed forms: q = 0 gives 0; q = 1 gives e^{−c}; c = 0 gives q.
    """
    qa = check_unit_interval(q, "q")
    ca = check_nonnegative(c, "c", allow_inf=True)
    qa, ca = np.broadcast_arrays(qa, ca)
    out = np.empty(qa.shape, dtype=np.float64)

    zero_q = (qa == 0.0) | np.isinf(ca)
    out[zero_q] = 0.0
    one_q = (qa == 1.0) & ~zero_q
    out[one_q] = np.exp(-ca[one_q])
    no_budget = (ca == 0.0) & ~zero_q & ~one_q
    out[no_budget] = qa[no_budget]

    rest = ~(zero_q | one_q | no_budget)
    if rest.any():
        qr, cr = qa[rest], ca[rest]
        saturated = _kl(qr, np.full_like(qr, _TINY)) <= cr
        sol = np.zeros_like(qr)
        solve = ~saturated
        if solve.any():
            sol[solve] = _solve(qr[solve], cr[solve], np.full(solve.sum(), _TINY), qr[solve])
        out[rest] = np.minimum(sol, qr)
    return to_output(out)
