"""A time-uniform confidence sequence for the mean of [0, 1] variables that arrive in rounds: the
predictable plug-in empirical-Bernstein (PrPl-EB) confidence sequence of Waudby-Smith & Ramdas
(2023, JRSS-B 86(1), "Estimating means of bounded random variables by betting", Thm 2 with the
bets of their eq. (13)-(15)), with every bet fixed for a whole round. Pure numpy.

Construction. Items x_1, x_2, … ∈ [0, 1] come in rounds; round r holds items s_r + 1 … e_r. With
the predictable plug-in estimates (one pseudo-item 1/2 of variance 1/4 as a prior)

    μ̂_t = (1/2 + Σ_{i≤t} x_i) / (t + 1),    σ̂²_t = (1/4 + Σ_{i≤t} (x_i − μ̂_i)²) / (t + 1),

round r's items all get the bet (λ is a function of the rounds before r only)

    λ_r = min(c, sqrt(2 ln(2/α) / (σ̂²_{s_r} · e_r · g_r))),   c = 1/2,
    g_r = ln(1 + e_r) for r ≥ 1 (their time-uniform bet, at the round's last item),
    g_0 = 1 (their fixed-time bet for n = e_0: the first round is looked at once, at its end),

and after any round r, with v_i = 4 (x_i − μ̂_{i−1})² and ψ_E(λ) = (−ln(1 − λ) − λ) / 4,

    C_r = [ (Σ λ_i x_i − ln(2/α) − Σ v_i ψ_E(λ_i)) / Σ λ_i ,  (Σ λ_i x_i + ln(2/α) + Σ v_i ψ_E(λ_i)) / Σ λ_i ],

sums over i ≤ e_r, intersected with [0, 1] and with C_0 … C_{r−1} (the running intersection). With
rounds of one item this is their PrPl-EB sequence exactly (both bets are then capped at c for the
first item, as ln(2/α) ≥ ln 2).

Validity: P(μ ∈ C_r for every round r) ≥ 1 − α. Let F_{i−1} be what is known before item i and
μ_i = E[x_i | F_{i−1}]. Fan, Grama & Liu (2015, Lemma 4.1): exp(λξ − 4ψ_E(λ) ξ²) ≤ 1 + λξ for
ξ ≥ −1 and λ ∈ [0, 1). With ξ = x_i − μ̂_{i−1} ∈ [−1, 1] and λ_i, μ̂_{i−1} predictable,
E[exp(λ_i (x_i − μ̂_{i−1}) − v_i ψ_E(λ_i)) | F_{i−1}] ≤ 1 + λ_i (μ_i − μ̂_{i−1}) ≤ exp(λ_i (μ_i − μ̂_{i−1})),
so M_t = Π_{i≤t} exp(λ_i (x_i − μ_i) − v_i ψ_E(λ_i)) is a nonnegative supermartingale with M_0 = 1,
and by Ville's inequality P(∃t: M_t ≥ 2/α) ≤ α/2. At a round's end Σ_{i≤e_r} λ_i μ_i = μ Σ_{i≤e_r} λ_i
in both cases we use: i.i.d. items (μ_i = μ), and rounds of independent items whose means average
to μ over each round (a test set, or fresh items, stratified by slice in the mixture's proportions)
— λ is constant over every round, which is why bets are fixed per round. So off that
event, at every round end, Σ λ_i (x_i − μ) − Σ v_i ψ_E(λ_i) < ln(2/α), i.e. μ is above the lower
end of C_r; the same argument on 1 − x_i (ξ = μ̂_{i−1} − x_i ≥ −1) bounds the upper end; a union
over the two sides gives α. Holding at every round end at once, it holds at a stopping time, and
the running intersection holds as well. Within the first round (stratified case) the sequence is
not a bound, so only round ends are reported. The estimates only set λ: a σ̂² that overstates the
variance (stratified items) costs width, never validity.

The older method, kept for races started with it: :func:`paired_interval`, an empirical-Bernstein
interval of a paired mean (Maurer & Pontil 2009, Thm 4) at the look's share :func:`look_delta` of
δ (a union bound over looks); :mod:`~pacbayes_sft.stats.allocation` says how a race uses either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ._validate import check_count, check_open_unit, check_rounds

BET_CAP = 0.5
"""c: the largest bet (Waudby-Smith & Ramdas suggest 1/2 or 3/4; any c < 1 is valid)."""


def psi_e(lam: np.ndarray | float) -> np.ndarray | float:
    """ψ_E(λ) = (−ln(1 − λ) − λ) / 4, for λ ∈ [0, 1)."""
    return (-np.log1p(-np.asarray(lam, dtype=float)) - lam) / 4


@dataclass(frozen=True)
class BettingState:
    """The running sums of one confidence sequence after some rounds (see the module docstring):
    ``alpha`` its two-sided error; ``n`` items; ``total`` Σ x_i; ``sq_dev`` Σ (x_i − μ̂_i)²;
    ``bet`` Σ λ_i; ``bet_x`` Σ λ_i x_i; ``penalty`` Σ v_i ψ_E(λ_i); ``lower``, ``upper`` the
    running intersection of the intervals (of the mean of x, in [0, 1])."""

    alpha: float
    n: int = 0
    total: float = 0.0
    sq_dev: float = 0.0
    bet: float = 0.0
    bet_x: float = 0.0
    penalty: float = 0.0
    lower: float = 0.0
    upper: float = 1.0

    @property
    def mean(self) -> float:
        """The plain mean of the items so far (NaN before any)."""
        return self.total / self.n if self.n else math.nan


def round_bets(alpha: float, variance: np.ndarray, ends: np.ndarray, first: bool) -> np.ndarray:
    """λ_r = min(c, sqrt(2 ln(2/α) / (σ̂² · e_r · g_r))) for rounds ending at items ``ends`` (global
    counts) with plug-in variances ``variance`` from before each round; g_r = ln(1 + e_r), except
    g = 1 for the sequence's first round when ``first``."""
    g = np.log1p(ends.astype(float))
    if first:
        g[0] = 1.0
    return np.minimum(BET_CAP, np.sqrt(2 * math.log(2 / alpha) / (variance * ends * g)))


def advance(
    state: BettingState, x: Sequence[float] | np.ndarray, sizes: Sequence[int] | None = None
) -> tuple[BettingState, np.ndarray, np.ndarray]:
    """Feed the items ``x`` ∈ [0, 1], in rounds of ``sizes`` (default: one round), to the sequence
    ``state``; returns the new state and the interval's lower and upper ends after each round
    (running intersection). Vectorised over items and rounds."""
    x = np.asarray(x, dtype=float)
    sizes = np.asarray([x.size] if sizes is None else sizes, dtype=int)
    check_rounds(x, sizes)
    if x.size == 0:
        return state, np.empty(0), np.empty(0)
    n0, log_term = state.n, math.log(2 / state.alpha)
    t = n0 + np.arange(1, x.size + 1)
    mu_now = (0.5 + state.total + np.cumsum(x)) / (t + 1)  # μ̂_t
    mu_prev = np.concatenate([[(0.5 + state.total) / (n0 + 1)], mu_now[:-1]])  # μ̂_{t−1}
    sq = state.sq_dev + np.cumsum((x - mu_now) ** 2)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    variance = (0.25 + np.concatenate([[state.sq_dev], sq])[starts]) / (n0 + starts + 1)  # σ̂² before each round
    lam = np.repeat(round_bets(state.alpha, variance, n0 + ends, first=n0 == 0), sizes)
    bet = state.bet + np.cumsum(lam)[ends - 1]
    bet_x = state.bet_x + np.cumsum(lam * x)[ends - 1]
    penalty = state.penalty + np.cumsum(4 * (x - mu_prev) ** 2 * psi_e(lam))[ends - 1]
    lower = np.maximum.accumulate(np.maximum((bet_x - log_term - penalty) / bet, state.lower))
    upper = np.minimum.accumulate(np.minimum((bet_x + log_term + penalty) / bet, state.upper))
    new = replace(
        state,
        n=n0 + x.size,
        total=state.total + float(x.sum()),
        sq_dev=float(sq[-1]),
        bet=float(bet[-1]),
        bet_x=float(bet_x[-1]),
        penalty=float(penalty[-1]),
        lower=float(lower[-1]),
        upper=float(upper[-1]),
    )
    return new, lower, upper


def betting_bounds(
    x: Sequence[float] | np.ndarray, sizes: Sequence[int] | None, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The confidence sequence at level 1 − ``alpha`` for the mean of ``x`` ∈ [0, 1] fed in rounds
    of ``sizes`` (None: every item its own round, i.e. PrPl-EB itself): the lower and upper ends
    after each round, running intersection."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    x = np.asarray(x, dtype=float)
    _, lower, upper = advance(BettingState(float(alpha)), x, np.ones(x.size, dtype=int) if sizes is None else sizes)
    return lower, upper


def paired_state(state: BettingState, d: np.ndarray) -> tuple[BettingState, tuple[float, float, float]]:
    """Feed one round of paired differences d ∈ [−1, 1] (as x = (d + 1)/2) to ``state``; returns the
    new state and (mean, lower, upper) of E d: mean d̄, ends 2·[lower, upper] − 1 of the sequence."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not np.isfinite(d).all() or (np.abs(d) > 1).any():
        raise ValueError("d must be a one-dimensional array of finite differences in [-1, 1]")
    state, _, _ = advance(state, (d + 1) / 2)
    return state, difference_interval(state)


def difference_interval(state: BettingState) -> tuple[float, float, float]:
    """(mean, lower, upper) of E d for a sequence fed x = (d + 1)/2: 2·(x̄, lower, upper) − 1."""
    return 2 * state.mean - 1, 2 * state.lower - 1, 2 * state.upper - 1


def look_delta(level: float, look: int, n_buckets: int) -> float:
    """δ_t = (1 − level) / ((K − 1) · t (t + 1)): one pair's share of the failure probability at
    look t = 1, 2, … among K buckets (summing to 1 − level over all looks and the K − 1 pairs with
    the best)."""
    level = check_open_unit(level, "level")
    look = check_count(look, "look", 1)
    n_buckets = check_count(n_buckets, "n_buckets", 2)
    return (1 - level) / ((n_buckets - 1) * look * (look + 1))


def bernstein_half_width(variance: float, n: int, delta: float) -> float:
    """w = sqrt(2 V ln(2/δ) / n) + 14 ln(2/δ) / (3 (n − 1)): the empirical-Bernstein half-width of
    the mean of n differences in [−1, 1] with sample variance V (Maurer & Pontil 2009, Thm 4, on
    (d + 1)/2), one-sided at δ on each side; inf below two items."""
    delta = check_open_unit(delta, "delta")
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance must be a finite number >= 0, got {variance!r}")
    if n < 2:
        return math.inf
    log_term = math.log(2 / delta)
    return math.sqrt(2 * variance * log_term / n) + 14 * log_term / (3 * (n - 1))


def paired_interval(d: np.ndarray, delta: float) -> tuple[float, float, float]:
    """(mean, lower, upper) of the paired differences ``d`` (in [−1, 1]) at δ on each side,
    by :func:`bernstein_half_width`."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or not np.isfinite(d).all() or (np.abs(d) > 1).any():
        raise ValueError("d must be a one-dimensional array of finite differences in [-1, 1]")
    if d.size == 0:
        return math.nan, -math.inf, math.inf
    mean = float(d.mean())
    w = bernstein_half_width(float(d.var(ddof=1)) if d.size > 1 else 0.0, d.size, delta)
    return mean, mean - w, mean + w
