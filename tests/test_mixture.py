"""The conjugate-mixture empirical-Bernstein sequence (stats.mixture) and the race's one-sided
"cmeb" method: the closed form against numerical integration, the boundary against an
independent root finder, its monotonicity, coverage on simulations with known truth, and races
whose answers must be right at the level (with a deliberately broken boundary that must fail)."""

import itertools
import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq

import pacbayes_sft.stats.mixture as mixture
from pacbayes_sft.stats.allocation import PairedRace, run_race
from pacbayes_sft.stats.mixture import (
    MixtureState,
    best_rho,
    log_mixture,
    mixture_advance,
    mixture_boundary,
    mixture_bounds,
    tuned_rho,
)


def _log_mixture_by_quadrature(s, v, rho, c):
    """ln ∫ exp(λs − ψ_c(λ)V) dF(λ), F ∝ (1 − cλ)^{ρ/c² − 1} e^{ρλ/c} on [0, 1/c), integrated
    numerically (the definition, not the incomplete-gamma closed form)."""

    def log_prior(lam):
        return (rho / c**2 - 1) * math.log1p(-c * lam) + rho * lam / c

    def log_psi(lam):
        return (-math.log1p(-c * lam) - c * lam) / c**2

    num = quad(lambda lam: math.exp(lam * s - log_psi(lam) * v + log_prior(lam)), 0, 1 / c, limit=400, epsrel=1e-12)
    den = quad(lambda lam: math.exp(log_prior(lam)), 0, 1 / c, limit=400, epsrel=1e-12)
    return math.log(num[0] / den[0])


@pytest.mark.parametrize("c", [1.0, 0.5])
@pytest.mark.parametrize(
    "s,v,rho", [(5.0, 20.0, 10.0), (30.0, 300.0, 50.0), (2.0, 1.0, 3.0), (0.5, 0.0, 0.7), (60.0, 900.0, 11.0)]
)
def test_the_closed_form_is_the_integral_of_the_mixture(s, v, rho, c):
    assert float(log_mixture(s, v, rho, c)) == pytest.approx(
        _log_mixture_by_quadrature(s, v, rho, c), rel=1e-9, abs=1e-11
    )


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_the_boundary_is_the_root_from_above(c):
    """u_α(V) against brentq on the closed form: never below the root, above it by < 1e-9."""
    alpha, rho = 1 / 60, best_rho(100.0, 1 / 60)
    v = np.array([0.0, 0.3, 5.0, 40.0, 100.0, 1e3, 1e4, 1e5])
    u = mixture_boundary(v, alpha, rho, c)
    for vi, ui in zip(v, u):
        root = brentq(
            lambda s, vi=vi: float(log_mixture(s, vi, rho, c)) - math.log(1 / alpha), 0, 10 * ui + 10, xtol=1e-14
        )
        assert root <= ui <= root * (1 + 1e-9) + 1e-9
        assert float(log_mixture(ui, vi, rho, c)) >= math.log(1 / alpha)
    assert np.array_equal(u, [float(mixture_boundary(x, alpha, rho, c)) for x in v])  # vectorised = one by one


def test_the_boundary_grows_with_the_log_of_one_over_alpha_and_shrinks_relative_to_time():
    rho, v = best_rho(100.0, 0.01), np.linspace(0, 5000, 51)
    by_alpha = [mixture_boundary(v, a, rho, 0.5) for a in (0.2, 0.05, 1 / 60, 1e-3, 1e-6)]
    assert all((a < b).all() for a, b in itertools.pairwise(by_alpha))  # smaller α, wider
    u = by_alpha[2]
    assert (np.diff(u) > 0).all()  # grows with V
    t = np.arange(1, 51) * 400.0
    width = mixture_boundary(0.03 * t, 1 / 60, rho, 0.5) / t  # a fixed variance a item
    assert (np.diff(width) < 0).all() and width[-1] < 0.2 * width[0]
    # the scale: c = 1/2 is tighter than c = 1 at the same V (a smaller range of x − μ̂)
    assert (mixture_boundary(v, 1 / 60, rho, 0.5) < mixture_boundary(v, 1 / 60, rho, 1.0)).all()


@pytest.mark.parametrize("v_opt", [25.0, 100.0, 1000.0])
def test_best_rho_is_near_the_tightest_at_its_intrinsic_time(v_opt):
    alpha = 1 / 60
    grid = best_rho(v_opt, alpha) * np.exp(np.linspace(-3, 3, 61))
    best = min(float(mixture_boundary(v_opt, alpha, g, 0.5)) for g in grid)
    assert float(mixture_boundary(v_opt, alpha, best_rho(v_opt, alpha), 0.5)) <= 1.01 * best
    assert tuned_rho(alpha) == best_rho(mixture.TUNE_V, alpha)


def _by_hand(x, sizes, alpha, rho, c):
    """The sequence written out item by item, its boundary found by brentq."""
    total = sq = 0.0
    lo, hi, out, t = 0.0, 1.0, [], 0
    for size in sizes:
        for xi in x[t : t + size]:
            centre = min(max((0.5 + total) / (t + 1), 1 - c), c)
            sq += (xi - centre) ** 2
            total += xi
            t += 1
        u = brentq(lambda s, v=sq: float(log_mixture(s, v, rho, c)) - math.log(1 / alpha), 0, 1e6, xtol=1e-13)
        lo, hi = max(lo, total / t - u / t), min(hi, total / t + u / t)
        out.append((lo, hi))
    return np.array(out).T


@pytest.mark.parametrize("c", [0.5, 0.75, 1.0])
def test_rounds_are_the_sums_written_out_and_can_be_fed_one_at_a_time(c):
    x = np.random.default_rng(3).beta(0.5, 2.0, 600)
    sizes = [200, 100, 100, 200]
    lo, hi = mixture_bounds(x, sizes, 0.05, 30.0, c)
    want = _by_hand(x, sizes, 0.05, 30.0, c)
    assert np.allclose([lo, hi], want, atol=1e-9)
    state, got = MixtureState(0.05, 30.0, c), []
    for a, b in zip(np.cumsum(sizes) - sizes, np.cumsum(sizes)):
        state, l1, h1 = mixture_advance(state, x[a:b])
        got.append((l1[0], h1[0]))
    assert np.allclose(np.array(got).T, [lo, hi], atol=1e-12) and state.n == 600
    assert state.mean == pytest.approx(x.mean()) and 0 < lo[-1] < x.mean() < hi[-1] < 1
    lo1, _ = mixture_bounds(x, None, 0.05, 30.0, c)  # item by item: one interval per item
    assert lo1.size == 600 and lo1[-1] == pytest.approx(lo[-1], abs=0.02)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"alpha": 1.0, "rho": 1.0}, "alpha"),
        ({"alpha": 0.1, "rho": 0.0}, "rho"),
        ({"alpha": 0.1, "rho": 1.0, "scale": 0.4}, "scale"),
        ({"alpha": 0.1, "rho": 1.0, "scale": 1.5}, "scale"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        MixtureState(**kwargs)
    with pytest.raises(ValueError, match="sizes"):
        mixture_bounds(np.zeros(10), [4, 4], 0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mixture_bounds(np.full(10, 1.5), None, 0.1)
    with pytest.raises(ValueError, match="v must"):
        mixture_boundary(-1.0, 0.1, 1.0)


def _misses(draw, mean, alpha, reps, sizes, rng, shift=0.0):
    """Per end: in how many of ``reps`` sequences the interval leaves ``mean`` + shift at some round end."""
    below = above = 0
    for _ in range(reps):
        lo, hi = mixture_bounds(draw(rng), sizes, alpha, best_rho(50.0, alpha))
        below += bool((hi < mean + shift).any())
        above += bool((lo > mean + shift).any())
    return below / reps, above / reps


@pytest.mark.parametrize("kind", ["bernoulli", "skewed", "stratified"])
def test_each_end_misses_at_most_alpha_at_every_round_end_at_once(kind):
    """1,500 sequences of 3,000 items in rounds of 100: each end leaves the true mean at some round
    end in at most a fraction α; a mean 0.04 off is left far more often (the check has power). The
    stratified first round holds two strata in order (0.05, then 0.95: mean 0.5) — the mixture's λ
    is one number for all items, so round ends are covered."""
    rng, alpha, reps, sizes = np.random.default_rng(7), 0.05, 1500, [300] + [100] * 27
    mean = {"bernoulli": 0.3, "skewed": 0.1, "stratified": 0.5}[kind]

    def draw(rng):
        if kind == "bernoulli":
            return (rng.random(3000) < 0.3).astype(float)
        if kind == "skewed":
            return rng.beta(0.3, 2.7, 3000)
        first = np.concatenate([rng.random(150) < 0.05, rng.random(150) < 0.95])
        return np.concatenate([first, rng.random(2700) < 0.5]).astype(float)

    below, above = _misses(draw, mean, alpha, reps, sizes, rng)
    margin = 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert below <= alpha + margin and above <= alpha + margin
    shifted, _ = _misses(draw, mean, alpha, 300, sizes, rng, shift=0.04)
    assert shifted > 0.5


def test_the_coverage_check_fails_a_boundary_that_is_too_narrow(monkeypatch):
    """The same check catches a sequence whose boundary is one standard error, sqrt(V), looked at
    after every round."""
    monkeypatch.setattr(mixture, "mixture_boundary", lambda v, a, rho, c=0.5: np.sqrt(v))
    rng, alpha, reps = np.random.default_rng(7), 0.05, 600
    below, above = _misses(lambda r: (r.random(3000) < 0.3).astype(float), 0.3, alpha, reps, [300] + [100] * 27, rng)
    assert max(below, above) > alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)


OFFSETS = np.linspace(-0.2, 0.2, 8)


def _stratified(means, rng, offsets=OFFSETS):
    """draw(contenders, round, n): n items in equal shares over slices that shift the buckets'
    error rates unequally (bucket i by offset · (1 or 1/2)), half the items paired."""

    def draw(contenders, _round, n):
        slice_of, u, paired = np.arange(n) % len(offsets), rng.random(n), rng.random(n) < 0.5
        return {
            b: (np.where(paired, u, rng.random(n)) < means[b] + offsets[slice_of] * (0.5 if i % 2 else 1.0)).astype(
                float
            )
            for i, b in enumerate(contenders)
        }

    return draw


def _wrong(res, means, eps):
    best = min(means.values())
    if not any(means[b] == best for b in res.answer):
        return True
    return res.reason == "epsilon_tie" and any(means[b] - best > eps for b in res.answer)


NEAR_EPSILON = {"b0": 0.40, "b1": 0.425, "b2": 0.50}  # b1 is ε + 0.005 beyond the best: a wrong ε-tie holds it


@pytest.mark.parametrize("means", [NEAR_EPSILON, {"b0": 0.40, "b1": 0.40, "b2": 0.41}])
def test_the_one_sided_race_is_right_at_the_level(means):
    """300 races at level 0.8 (wrong answers would show), slices of unequal difficulty: the
    one-sided "cmeb" race, δ/(K − 1) on one end of each pair, is wrong in at most 1 − level."""
    reps, level, eps = 300, 0.8, 0.02
    wrong = 0
    for r in range(reps):
        draw = _stratified(means, np.random.default_rng([r, 5]))
        res = run_race(draw, list(means), first_items=400, epsilon=eps, level=level, round_items=200,
                       max_items=4000, confidence="cmeb")  # fmt: skip
        wrong += _wrong(res, means, eps)
    assert wrong / reps <= 1 - level + 3 * math.sqrt(level * (1 - level) / reps)


def test_the_race_check_fails_a_race_with_a_broken_boundary(monkeypatch):
    """The same check, at level 0.95, catches a "cmeb" race whose boundary is a twentieth of the real
    one (it picks round 0's empirical best, wrong in about 16% of the near-ε races)."""
    real = mixture.mixture_boundary
    monkeypatch.setattr(mixture, "mixture_boundary", lambda v, a, rho, c=0.5: real(v, a, rho, c) / 20)
    reps, level, eps = 200, 0.95, 0.02
    wrong = 0
    for r in range(reps):
        res = run_race(_stratified(NEAR_EPSILON, np.random.default_rng([r, 5])), list(NEAR_EPSILON), first_items=400,
                       epsilon=eps, level=level, round_items=200, max_items=6000, confidence="cmeb")  # fmt: skip
        wrong += _wrong(res, NEAR_EPSILON, eps)
    assert wrong / reps > 1 - level + 3 * math.sqrt(level * (1 - level) / reps)


def test_a_race_pair_spends_delta_over_k_minus_one_on_each_end():
    """The race's "cmeb" pair sequence is :func:`mixture_bounds` at α = δ/(K − 1) on each end, c = 1/2,
    ρ tuned at TUNE_V, mirrored for the other order; 'betting' spends α two-sided."""
    rng = np.random.default_rng(0)
    losses = {b: (rng.random(800) < p).astype(float) for b, p in (("a", 0.3), ("b", 0.32), ("c", 0.5), ("e", 0.9))}
    race = PairedRace(level=0.95, confidence="cmeb").partial_fit(losses)
    alpha = 0.05 / 3
    lo, hi = mixture_bounds((losses["a"] - losses["b"] + 1) / 2, [800], alpha, tuned_rho(alpha), 0.5)
    mean, lower, upper = race.interval("a", "b")
    assert (lower, upper) == pytest.approx((2 * lo[-1] - 1, 2 * hi[-1] - 1))
    assert race.interval("b", "a") == pytest.approx((-mean, -upper, -lower))
    assert mean == pytest.approx(losses["a"].mean() - losses["b"].mean())
    betting = PairedRace(level=0.95, confidence="betting").partial_fit(losses)
    assert upper - lower < betting.interval("a", "b")[2] - betting.interval("a", "b")[1]
