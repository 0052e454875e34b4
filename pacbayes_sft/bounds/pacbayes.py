"""PAC-Bayes bounds on the expected risk E_π R of a posterior π.

All bounds hold with probability ≥ 1 − δ over an i.i.d. sample of size n, simultaneously for
every posterior π, for a loss with values in ``loss_range = (a, b)`` (default [0, 1]).
KL = KL(π ‖ π_prior) in nats; the prior must not depend on the sample.

With B = KL + ln(2√n/δ) (the Maurer complexity term):

- Maurer–McAllester:  E_π R ≤ E_π R̂ + sqrt(B / (2n))
- Seeger / Maurer kl: E_π R ≤ kl⁻¹(E_π R̂, B / n)        (never looser than Maurer, by Pinsker)
- Catoni (fixed C>0): E_π R ≤ (1 − exp(−C·E_π R̂ − (KL + ln(1/δ))/n)) / (1 − e^{−C})
- Thiemann λ-bound:   E_π R ≤ E_π R̂/(1 − λ/2) + B/(n λ (1 − λ/2)),  all λ ∈ (0, 2) at once,
                      minimised at λ* = 2 / (sqrt(2n E_π R̂ / B + 1) + 1)
- Quad bound:         E_π R ≤ (sqrt(E_π R̂ + η) + sqrt(η))²,  η = B / (2n)

A loss in [a, b] is rescaled to [0, 1], bounded, and scaled back. Every bound is returned as
min(bound, b), b being the trivial bound: a vacuous bound (any bound at KL = ∞, a Maurer or
λ-bound above the range) reads b for every method.

:data:`BOUNDS` names them all; another bound joins it by one line there or, from a package of
your own, by :func:`register_bound` (CONTRIBUTING.md, "Adding one thing").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..registry import check_free, pop_registered
from ._validate import (
    ArrayLike,
    as_float_array,
    check_delta,
    check_loss_range,
    check_n,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    to_output,
)
from .kl import kl_inverse_upper


def maurer_complexity(kl: ArrayLike, n: ArrayLike, delta: ArrayLike) -> float | np.ndarray:
    """B = KL + ln(2√n/δ) in nats (note: ln(2√n/δ), not ln(2√n)/δ)."""
    kla = check_nonnegative(kl, "kl", allow_inf=True)
    na = check_n(n)
    da = check_delta(delta)
    return to_output(kla + np.log(2.0 * np.sqrt(na) / da))


def _unit_risk(emp_risk: ArrayLike, loss_range: tuple[float, float]) -> tuple[np.ndarray, float, float]:
    a, b = check_loss_range(loss_range)
    r = as_float_array(emp_risk, "emp_risk")
    if ((r < a) | (r > b)).any():
        raise ValueError(f"emp_risk must lie in loss_range [{a}, {b}], got {emp_risk!r}")
    return (r - a) / (b - a), a, b


def _rescaled(fn: Callable[..., np.ndarray]) -> Callable[..., float | np.ndarray]:
    """Wrap a [0,1] bound so it accepts ``loss_range=(a, b)`` and returns loss units.

    Every bound is reported as min(bound, b): a loss in [a, b] never has a risk above b, so b
    is itself a valid (trivial) bound. A vacuous bound — e.g. any bound at KL = ∞ — therefore
    reads b for every method, never ∞ or a number above the loss range.
    """

    def wrapper(emp_risk, kl, n, delta, *args, loss_range=(0.0, 1.0), **kwargs):
        r, a, b = _unit_risk(emp_risk, loss_range)
        with np.errstate(invalid="ignore", over="ignore"):
            unit = np.minimum(np.asarray(fn(r, kl, n, delta, *args, **kwargs), dtype=np.float64), 1.0)
        if np.isnan(unit).any():  # pragma: no cover - guarded by the argument checks
            raise ValueError(f"{fn.__name__}: the bound is undefined for these arguments")
        return to_output(a + (b - a) * unit)

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


@_rescaled
def maurer_bound(emp_risk, kl, n, delta):
    """Maurer–McAllester bound: E_π R̂ + sqrt((KL + ln(2√n/δ)) / (2n)).

    Args: emp_risk in [a, b]; kl ≥ 0 (nats); n ≥ 1; delta ∈ (0, 1); keyword loss_range=(a, b).
    """
    bterm = np.asarray(maurer_complexity(kl, n, delta))
    na = check_n(n)
    return emp_risk + np.sqrt(bterm / (2.0 * na))


@_rescaled
def seeger_bound(emp_risk, kl, n, delta):
    """Seeger / Maurer kl bound: kl⁻¹(E_π R̂, (KL + ln(2√n/δ)) / n). Never above maurer_bound."""
    bterm = np.asarray(maurer_complexity(kl, n, delta))
    na = check_n(n)
    return np.asarray(kl_inverse_upper(emp_risk, bterm / na))


@_rescaled
def catoni_bound(emp_risk, kl, n, delta, C):
    """Catoni's bound for a fixed C > 0 chosen before seeing the sample:

    (1 − exp(−C·E_π R̂ − (KL + ln(1/δ))/n)) / (1 − e^{−C}).
    """
    kla = check_nonnegative(kl, "kl", allow_inf=True)
    na = check_n(n)
    da = check_delta(delta)
    ca = check_positive(C, "C")
    return -np.expm1(-ca * emp_risk - (kla + np.log(1.0 / da)) / na) / -np.expm1(-ca)


def optimal_lambda(emp_risk: ArrayLike, kl: ArrayLike, n: ArrayLike, delta: ArrayLike) -> float | np.ndarray:
    """λ* = 2 / (sqrt(2n·E_π R̂ / B + 1) + 1), B = KL + ln(2√n/δ): the minimiser of the λ-bound
    (risk on the [0, 1] scale)."""
    r = check_unit_interval(emp_risk, "emp_risk")
    bterm = np.asarray(maurer_complexity(kl, n, delta))
    na = check_n(n)
    return to_output(2.0 / (np.sqrt(2.0 * na * r / bterm + 1.0) + 1.0))


@_rescaled
def lambda_bound(emp_risk, kl, n, delta, lam=None):
    """Thiemann et al.'s λ-bound, E_π R̂/(1 − λ/2) + B/(n λ (1 − λ/2)), B = KL + ln(2√n/δ).

    It holds for all λ ∈ (0, 2) simultaneously, so the optimum λ* (used when ``lam`` is None)
    costs no confidence. Pass ``lam`` to evaluate a fixed λ ∈ (0, 2).
    """
    bterm = np.asarray(maurer_complexity(kl, n, delta))
    na = check_n(n)
    if lam is None:
        lam_a = 2.0 / (np.sqrt(2.0 * na * emp_risk / bterm + 1.0) + 1.0)
    else:
        lam_a = as_float_array(lam, "lam")
        if ((lam_a <= 0.0) | (lam_a >= 2.0)).any():
            raise ValueError(f"lam must lie in the open interval (0, 2), got {lam!r}")
    half = 1.0 - lam_a / 2.0
    return emp_risk / half + bterm / (na * lam_a * half)


@_rescaled
def quad_bound(emp_risk, kl, n, delta):
    """Quad bound (Rivasplata et al.): (sqrt(E_π R̂ + η) + sqrt(η))², η = (KL + ln(2√n/δ))/(2n)."""
    bterm = np.asarray(maurer_complexity(kl, n, delta))
    na = check_n(n)
    eta = bterm / (2.0 * na)
    return (np.sqrt(emp_risk + eta) + np.sqrt(eta)) ** 2


BOUNDS: dict[str, Callable[..., float | np.ndarray]] = {
    "seeger": seeger_bound,
    "maurer": maurer_bound,
    "catoni": catoni_bound,
    "lambda": lambda_bound,
    "quad": quad_bound,
}
"""Every PAC-Bayes bound by name: each σ-grid table and certificate gets one column per entry, and
``pacbayes-sft bound`` one row. Entries take ``(emp_risk, kl, n, delta, *, loss_range)``."""

_BUILT_IN = frozenset(BOUNDS)  # the engine and the certificate read "seeger" and "maurer" by name
# the other columns of a σ-grid table (certify.engine), which a bound's column must not overwrite
_RESERVED = frozenset(
    "sigma sigma_map kl m mc_mean_risk mc_risk_upper mc_scheme mc_losses delta_mc delta_bound".split()
)


def register_bound(
    name: str, fn: Callable[..., ArrayLike], *, replace: bool = False
) -> Callable[..., float | np.ndarray]:
    """Add the bound ``fn`` to :data:`BOUNDS` under ``name``, so that :func:`pac_bayes_bound`,
    ``two_gap_bound(method=name)``, every σ-grid table and certificate and ``pacbayes-sft bound``
    compute it. ValueError when ``name`` is taken (unless ``replace``; a built-in bound is never
    replaced).

    ``fn(emp_risk, kl, n, delta)`` is the bound on the [0, 1] scale: ``emp_risk`` is E_π R̂
    rescaled to [0, 1], ``kl`` = KL(π ‖ π_prior) ≥ 0 in nats (possibly ∞), ``n`` ≥ 1, δ ∈ (0, 1),
    each a float64 array already checked. The registered entry, returned, is ``fn`` wrapped as
    every built-in bound is: it takes ``loss_range=(a, b)``, rescales, and reports
    a + (b − a)·min(fn, 1) in loss units.
    """
    if not (isinstance(name, str) and name.isidentifier()) or name in _RESERVED:
        raise ValueError(f"name must be an identifier that no σ-grid column uses (it names one), got {name!r}")
    if not callable(fn):
        raise ValueError(f"fn must be a callable fn(emp_risk, kl, n, delta), got {fn!r}")
    check_free(BOUNDS, name, built_in=_BUILT_IN, kind="bound", replace=replace)

    def checked(emp_risk, kl, n, delta):
        kla = check_nonnegative(kl, "kl", allow_inf=True)
        return fn(emp_risk, kla, check_n(n), check_delta(delta))

    checked.__name__ = checked.__qualname__ = getattr(fn, "__name__", name)
    checked.__doc__ = fn.__doc__
    BOUNDS[name] = _rescaled(checked)
    return BOUNDS[name]


def unregister_bound(name: str) -> Callable[..., float | np.ndarray]:
    """Remove and return the bound registered as ``name`` (ValueError for an unknown or built-in name)."""
    return pop_registered(BOUNDS, name, built_in=_BUILT_IN, kind="bound")


def pac_bayes_bound(
    method: str,
    emp_risk: ArrayLike,
    kl: ArrayLike,
    n: ArrayLike,
    delta: ArrayLike,
    *,
    loss_range: tuple[float, float] = (0.0, 1.0),
    C: float | None = None,
) -> float | np.ndarray:
    """Dispatch to one of :data:`BOUNDS` by name (``C`` is required for ``"catoni"``)."""
    if method not in BOUNDS:
        raise ValueError(f"method must be one of {sorted(BOUNDS)}, got {method!r}")
    if method == "catoni":
        if C is None:
            raise ValueError("C must be given (a positive float) for method='catoni'")
        return catoni_bound(emp_risk, kl, n, delta, C, loss_range=loss_range)
    return BOUNDS[method](emp_risk, kl, n, delta, loss_range=loss_range)
