"""A time-uniform confidence sequence for the mean of [0, 1] variables that arrive in rounds: the
conjugate-mixture empirical-Bernstein (CM-EB) boundary of Howard, Ramdas, McAuliffe & Sekhon
(2021, Annals of Statistics 49(2), "Time-uniform, nonparametric, nonasymptotic confidence
sequences": their gamma-exponential conjugate mixture, the boundary their confseq package
computes as ``gamma_exponential_mixture_bound``, applied to their empirical-Bernstein process),
each side at its own one-sided error α. Numpy and scipy only.

Process. Items x_1, x_2, … ∈ [0, 1], μ_i = E[x_i | F_{i−1}] (F_{i−1}: what is known before item
i). Fix a scale c ∈ [1/2, 1] and a predictable centre μ̂_{i−1} ∈ [1 − c, c]: the running mean
(1/2 + Σ_{j<i} x_j) / i (one pseudo-item 1/2, as in :mod:`~pacbayes_sft.stats.confidence`)
clipped to [1 − c, c]. Then ξ_i = x_i − μ̂_{i−1} ≥ −c and −ξ_i ≥ −c. Take

    S_t = Σ_{i≤t} (x_i − μ_i),    V_t = Σ_{i≤t} (x_i − μ̂_{i−1})².

The races use c = 1/2 (:data:`SCALE`), where the clip pins μ̂ = 1/2: V_t = Σ (x_i − 1/2)² = Σ d_i²/4
for paired differences d = 2x − 1, a running sum of the losses alone, larger than the centred
one by θ²/4 an item (θ = E d: a thousandth of the variance at the gaps a race decides on).

Fan, Grama & Liu (2015, Lemma 4.1), applied to ξ/c and cλ: exp(λξ − ψ_c(λ) ξ²) ≤ 1 + λξ for
ξ ≥ −c, λ ∈ [0, 1/c), with ψ_c(λ) = (−ln(1 − cλ) − cλ)/c² (Howard et al.'s sub-exponential ψ_{E,c}).
Hence E[exp(λξ_i − ψ_c(λ)ξ_i²) | F_{i−1}] ≤ 1 + λ(μ_i − μ̂_{i−1}) ≤ exp(λ(μ_i − μ̂_{i−1})), and for
every fixed λ ∈ [0, 1/c)

    L_t(λ) = exp(λ S_t − ψ_c(λ) V_t)

is a nonnegative supermartingale with L_0 = 1; so is any mixture ∫ L_t(λ) dF(λ) over a
distribution F on [0, 1/c) fixed in advance (Fubini). The gamma-exponential mixture takes
dF(λ) ∝ (1 − cλ)^{ρ/c² − 1} e^{ρλ/c} dλ, which is conjugate: with a = (V + ρ)/c², z = a + s/c,
a₀ = ρ/c² and P the regularised lower incomplete gamma function,

    m(s, V) = ∫ exp(λs − ψ_c(λ)V) dF(λ)
            = [e^{z} z^{−a} Γ(a) P(a, z)] / [e^{a₀} a₀^{−a₀} Γ(a₀) P(a₀, a₀)]   (:func:`log_mixture`)

(u = 1 − cλ turns each integral into ∫₀¹ u^{a−1} e^{−zu} du / c = z^{−a} Γ(a) P(a, z) / c). By
Ville's inequality P(∃t: m(S_t, V_t) ≥ 1/α) ≤ α. m is increasing in s, so with the boundary
u_α(V) = the s solving m(s, V) = 1/α (:func:`mixture_boundary`),

    P(∃t: Σ_{i≤t} (x_i − μ_i) ≥ u_α(V_t)) ≤ α.

The same on 1 − x_i (centre 1 − μ̂_{i−1}, the same V_t and c) bounds the other side. ρ, the
mixture's intrinsic time, must not depend on the data: :func:`best_rho` is Howard et al.'s choice
that makes the boundary tightest near V = v_opt, and :func:`tuned_rho` fixes v_opt = :data:`TUNE_V`
for every race (so a race continued past its cap keeps its ρ).

Rounds. At the end e_r of a round, Σ_{i≤e_r} μ_i = e_r μ when the items are i.i.d. of mean μ, or
independent and stratified so that each round's means average to μ (a test set, or fresh items
in the mixture's proportions). There S_{e_r} = Σ x_i − e_r μ, and off the event above

    μ ≥ (Σ_{i≤e_r} x_i − u_α(V_{e_r})) / e_r   (the lower end),   μ ≤ (Σ x_i + u_α(V_{e_r})) / e_r   (the upper end),

each failing at some round end with probability ≤ α (one-sided; the two together ≤ 2α). Unlike
the betting sequence, no bet has to be held fixed over a round: λ is one number for all items (it
is integrated out), and μ̂ only sets V_t, the inequality holding with any predictable μ̂ and the
per-item μ_i. Within the first round (stratified case) the bound is not claimed; only round ends
are reported. Holding at every round end at once, it holds at a stopping time, and the running
intersection holds as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import gammainc, gammaln

from ._validate import check_open_unit, check_rounds

TUNE_V = 100.0
"""The intrinsic time V at which ρ is tuned (:func:`tuned_rho`): 4,000 items with E(x − 1/2)² = 0.025,
the CPU study's paired differences (d = 2x − 1) having 0.005 to 0.07."""

SCALE = 0.5
"""c of the races' sequences: μ̂ is clipped to [1 − c, c] (at 1/2: μ̂ = 1/2), so x − μ̂ and μ̂ − x are ≥ −c."""

_NEWTON_STEPS = 60


def best_rho(v_opt: float, alpha: float) -> float:
    """ρ = v_opt / (2 ln(1/(2α)) + ln(1 + 2 ln(1/(2α)))): Howard et al.'s closed-form ρ (as in
    their confseq package) for which the one-sided normal mixture at error α is tightest at V = v_opt."""
    alpha = check_open_unit(alpha, "alpha")
    if not (math.isfinite(v_opt) and v_opt > 0):
        raise ValueError(f"v_opt must be a finite number > 0, got {v_opt!r}")
    k = 2 * math.log(1 / (2 * alpha)) if alpha < 0.5 else 0.0
    return v_opt / (k + math.log1p(k)) if k > 0 else v_opt


def tuned_rho(alpha: float) -> float:
    """The ρ of every race's sequences at one-sided error α: :func:`best_rho` at v_opt = :data:`TUNE_V`."""
    return best_rho(TUNE_V, alpha)


def _stirling(a: np.ndarray) -> np.ndarray:
    """ln Γ(a) − a ln a + a (bounded in a, so the large terms of log m cancel exactly)."""
    return gammaln(a) - a * np.log(a) + a


def log_mixture(s: np.ndarray | float, v: np.ndarray | float, rho: float, scale: float = 1.0) -> np.ndarray:
    """ln m(s, V): the log of the gamma-exponential mixture supermartingale with scale c = ``scale``
    (module docstring; a = (V + ρ)/c², z = a + s/c, a₀ = ρ/c²), for s ≥ 0, V ≥ 0 (arrays broadcast)."""
    s, v = np.asarray(s, dtype=float) / scale, np.asarray(v, dtype=float)
    a, a0 = (v + rho) / scale**2, np.float64(rho / scale**2)
    return (
        s - a * np.log1p(s / a) + _stirling(a) - _stirling(a0) + np.log(gammainc(a, a + s)) - np.log(gammainc(a0, a0))
    )


def _slope(s: np.ndarray, a: np.ndarray, scale: float) -> np.ndarray:
    """∂ ln m / ∂s = (s/c)/(a + s/c) + p(a, a + s/c)/P(a, a + s/c), over c (p the gamma density; the
    mixture's posterior mean of λ, in (0, 1/c))."""
    z = a + s / scale
    log_pdf = (a - 1) * np.log(z) - z - gammaln(a)
    return (s / scale / z + np.exp(log_pdf - np.log(gammainc(a, z)))) / scale


def mixture_boundary(v: np.ndarray | float, alpha: float, rho: float, scale: float = 1.0) -> np.ndarray:
    """u_α(V): the s ≥ 0 with ln m(s, V) = ln(1/α), vectorised over V ≥ 0. ln m is convex and
    increasing in s, so Newton's method started above the root stays above it: the value returned
    is never below the boundary (it is above by at most ~1e-12 relative)."""
    alpha = check_open_unit(alpha, "alpha")
    for name, val in (("rho", rho), ("scale", scale)):
        if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {val!r}")
    v = np.asarray(v, dtype=float)
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError("v must hold finite values >= 0")
    log_t, a = math.log(1 / alpha), (v + rho) / scale**2
    s = np.sqrt(2 * (v + rho) * (log_t + 0.5 * np.log1p(v / rho) + 1.0)) + 2 * scale * log_t  # raised until above
    while (low := log_mixture(s, v, rho, scale) < log_t).any():
        s = np.where(low, 2 * s, s)
    for _ in range(_NEWTON_STEPS):
        step = (log_mixture(s, v, rho, scale) - log_t) / _slope(s, a, scale)
        s = s - np.maximum(step, 0.0)  # a negative step is rounding at the root: stay above
        if (step <= 1e-13 * (1 + s)).all():
            break
    return s * (1 + 1e-12) + 1e-12  # the last step's rounding, conservatively


@dataclass(frozen=True)
class MixtureState:
    """The running sums of one CM-EB sequence after some rounds (module docstring): ``alpha`` the
    one-sided error of each end; ``rho`` the mixture's intrinsic time; ``scale`` c ∈ [1/2, 1];
    ``n`` items; ``total`` Σ x_i; ``sq_dev`` V = Σ (x_i − μ̂_{i−1})²; ``lower``, ``upper`` the
    running intersection of the intervals (of the mean of x, in [0, 1])."""

    alpha: float
    rho: float
    scale: float = SCALE
    n: int = 0
    total: float = 0.0
    sq_dev: float = 0.0
    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self):
        check_open_unit(self.alpha, "alpha")
        if not (isinstance(self.rho, (int, float)) and math.isfinite(self.rho) and self.rho > 0):
            raise ValueError(f"rho must be a finite number > 0, got {self.rho!r}")
        if not (isinstance(self.scale, (int, float)) and 0.5 <= self.scale <= 1):
            raise ValueError(f"scale must be a number in [0.5, 1], got {self.scale!r}")

    @property
    def mean(self) -> float:
        """The plain mean of the items so far (NaN before any)."""
        return self.total / self.n if self.n else math.nan


def mixture_advance(
    state: MixtureState, x: Sequence[float] | np.ndarray, sizes: Sequence[int] | None = None
) -> tuple[MixtureState, np.ndarray, np.ndarray]:
    """Feed the items ``x`` ∈ [0, 1] in rounds of ``sizes`` (default: one round) to ``state``;
    returns the new state and the interval's lower and upper ends after each round (running
    intersection, clipped to [0, 1])."""
    x = np.asarray(x, dtype=float)
    sizes = np.asarray([x.size] if sizes is None else sizes, dtype=int)
    check_rounds(x, sizes)
    if x.size == 0:
        return state, np.empty(0), np.empty(0)
    t = state.n + np.arange(1, x.size + 1)
    cum = state.total + np.cumsum(x)
    mu_prev = (np.concatenate([[state.total], cum[:-1]]) + 0.5) / t  # μ̂_{i−1} = (1/2 + Σ_{j<i} x_j) / i
    mu_prev = np.clip(mu_prev, 1 - state.scale, state.scale)  # so that x − μ̂ and μ̂ − x are ≥ −c
    ends = np.cumsum(sizes) - 1
    sq = state.sq_dev + np.cumsum((x - mu_prev) ** 2)[ends]
    width = mixture_boundary(sq, state.alpha, state.rho, state.scale) / t[ends]
    mean = cum[ends] / t[ends]
    lower = np.maximum.accumulate(np.maximum(mean - width, state.lower))
    upper = np.minimum.accumulate(np.minimum(mean + width, state.upper))
    new = replace(
        state,
        n=int(t[-1]),
        total=float(cum[-1]),
        sq_dev=float(sq[-1]),
        lower=float(lower[-1]),
        upper=float(upper[-1]),
    )
    return new, lower, upper


def mixture_bounds(
    x: Sequence[float] | np.ndarray,
    sizes: Sequence[int] | None,
    alpha: float,
    rho: float | None = None,
    scale: float = SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """The CM-EB sequence for the mean of ``x`` ∈ [0, 1] fed in rounds of ``sizes`` (None: every
    item its own round), each end at one-sided error ``alpha`` (both: 2α), ρ = ``rho`` (None:
    :func:`tuned_rho`), scale c = ``scale``: the lower and upper ends after each round, running
    intersection."""
    alpha = check_open_unit(alpha, "alpha")
    x = np.asarray(x, dtype=float)
    state = MixtureState(alpha, tuned_rho(alpha) if rho is None else float(rho), scale)
    _, lower, upper = mixture_advance(state, x, np.ones(x.size, dtype=int) if sizes is None else sizes)
    return lower, upper
