"""Binary KL and its inverses against closed forms and brute force."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacbayes_sft.bounds import kl_bernoulli, kl_inverse_lower, kl_inverse_upper


def _kl_ref(q, p):
    """Independent scalar reference with explicit 0·ln 0 handling."""
    out = 0.0
    if q > 0:
        out += q * math.log(q / p) if p > 0 else math.inf
    if q < 1:
        out += (1 - q) * math.log((1 - q) / (1 - p)) if p < 1 else math.inf
    return out


@pytest.mark.parametrize("q,p", [(0.1, 0.3), (0.5, 0.5), (0.0, 0.2), (1.0, 0.7), (0.9, 0.01), (0.3, 0.999)])
def test_kl_bernoulli_matches_reference(q, p):
    assert kl_bernoulli(q, p) == pytest.approx(_kl_ref(q, p), rel=1e-12, abs=1e-300)


def test_kl_bernoulli_infinite_at_boundary_and_vectorised():
    assert kl_bernoulli(0.3, 0.0) == math.inf
    assert kl_bernoulli(0.3, 1.0) == math.inf
    assert kl_bernoulli(0.0, 0.0) == 0.0
    q = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(kl_bernoulli(q, 0.25), [_kl_ref(x, 0.25) for x in q], rtol=1e-12)


def _brute_upper(q, c, grid=2_000_001):
    p = np.linspace(q, 1.0, grid)[:-1]
    ok = np.array([_kl_ref(q, x) <= c for x in p[:: max(1, grid // 200_000)]])
    # Refine: locate the last feasible coarse point, then scan finely around it.
    coarse = p[:: max(1, grid // 200_000)]
    last = coarse[ok][-1]
    fine = np.linspace(last, min(1.0, last + (coarse[1] - coarse[0]) * 2), 200_001)
    vals = np.array([_kl_ref(q, x) if x < 1 else math.inf for x in fine])
    return fine[vals <= c][-1]


@pytest.mark.parametrize("q,c", [(0.05, 0.01), (0.2, 0.1), (0.5, 0.5), (0.8, 0.02), (0.01, 2.0)])
def test_kl_inverse_upper_matches_brute_force(q, c):
    ref = _brute_upper(q, c)
    got = kl_inverse_upper(q, c)
    assert got == pytest.approx(ref, rel=1e-6)
    assert _kl_ref(q, got) == pytest.approx(c, rel=1e-9)


@pytest.mark.parametrize("q,c", [(0.3, 0.01), (0.6, 0.2), (0.95, 1.0)])
def test_kl_inverse_lower_is_root_below_q(q, c):
    got = kl_inverse_lower(q, c)
    assert 0 <= got <= q
    assert _kl_ref(q, got) == pytest.approx(c, rel=1e-9)
    # Brute force on a fine grid: smallest feasible p.
    grid = np.linspace(1e-12, q, 400_001)
    feas = grid[np.array([_kl_ref(q, x) for x in grid]) <= c]
    assert got == pytest.approx(feas[0], rel=1e-5)


def test_exact_edge_cases():
    assert kl_inverse_upper(0.0, 1.3) == pytest.approx(1 - math.exp(-1.3), rel=1e-15)
    assert kl_inverse_upper(1.0, 0.3) == 1.0
    assert kl_inverse_upper(0.37, 0.0) == 0.37
    assert kl_inverse_upper(0.2, 1e6) == 1.0
    assert kl_inverse_upper(0.2, math.inf) == 1.0
    assert kl_inverse_lower(1.0, 0.7) == pytest.approx(math.exp(-0.7), rel=1e-15)
    assert kl_inverse_lower(0.0, 0.7) == 0.0
    assert kl_inverse_lower(0.4, 0.0) == 0.4
    assert kl_inverse_lower(0.4, 1e6) == 0.0


def test_tiny_budget_is_accurate():
    # kl(q‖p) ≈ (p−q)²/(2q(1−q)) for p near q, so p ≈ q + sqrt(2q(1−q)c).
    q, c = 0.3, 1e-12
    approx = q + math.sqrt(2 * q * (1 - q) * c)
    assert kl_inverse_upper(q, c) == pytest.approx(approx, rel=1e-9)


def test_vectorised_over_arrays_matches_scalars():
    q = np.array([[0.0, 0.1, 0.5], [0.9, 1.0, 0.33]])
    c = np.array([[0.2, 0.0, 0.1], [3.0, 0.5, 1e-4]])
    up = kl_inverse_upper(q, c)
    lo = kl_inverse_lower(q, c)
    assert up.shape == q.shape and lo.shape == q.shape
    for idx in np.ndindex(q.shape):
        assert up[idx] == pytest.approx(kl_inverse_upper(float(q[idx]), float(c[idx])), rel=1e-14)
        assert lo[idx] == pytest.approx(kl_inverse_lower(float(q[idx]), float(c[idx])), rel=1e-14, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 50.0), st.floats(0.0, 50.0))
def test_inverse_monotone_in_budget(q, c1, c2):
    lo_c, hi_c = sorted((c1, c2))
    assert kl_inverse_upper(q, lo_c) <= kl_inverse_upper(q, hi_c)
    assert kl_inverse_lower(q, lo_c) >= kl_inverse_lower(q, hi_c)
    assert kl_inverse_lower(q, lo_c) <= q <= kl_inverse_upper(q, lo_c)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(1e-6, 5.0))
def test_inverse_monotone_in_q(q1, q2, c):
    a, b = sorted((q1, q2))
    assert kl_inverse_upper(a, c) <= kl_inverse_upper(b, c) + 1e-15


def _kl_mp(q, p):
    """50-digit reference (the float formula cancels badly for p near q)."""
    with mpmath.workdps(50):
        q, p = mpmath.mpf(q), mpmath.mpf(p)
        return q * mpmath.log(q / p) + (1 - q) * mpmath.log((1 - q) / (1 - p))


@settings(max_examples=200, deadline=None)
@given(st.floats(1e-6, 1 - 1e-6), st.floats(1e-8, 5.0))
def test_inverse_attains_budget(q, c):
    p = kl_inverse_upper(q, c)
    if p < 1.0:
        # p is the root to within a few ulps (kl is ill-conditioned in p near 1).
        ulp = np.spacing(p)
        assert _kl_mp(q, max(q, p - 4 * ulp)) <= c
        if p + 4 * ulp < 1.0:
            assert _kl_mp(q, p + 4 * ulp) >= c
    # Pinsker: p − q ≤ sqrt(c/2).
    assert p - q <= math.sqrt(c / 2) + 1e-12


@pytest.mark.parametrize("c", [1e-6, 0.05, math.log(2), 1.0, math.log(10), math.log(100), 20.0])
def test_kl_inverse_at_zero_risk_is_one_minus_exp(c):
    # kl(0 ‖ p) = −ln(1 − p), so kl⁻¹(0, c) = 1 − e^{−c}: ½ at c = ln 2, not vacuous (docs/THEORY.md §3)
    assert kl_inverse_upper(0.0, c) == pytest.approx(-math.expm1(-c), rel=1e-12)


def test_seeger_bound_at_zero_risk_is_one_half_at_b_equal_n_ln2():
    from pacbayes_sft.bounds import seeger_bound

    for n in (100, 1000):
        comp = math.log(2 * math.sqrt(n) / 0.05)  # B = KL + ln(2√n/δ)
        for target, b_over_n in ((0.5, math.log(2)), (0.9, math.log(10)), (0.99, math.log(100))):
            assert float(seeger_bound(0.0, n * b_over_n - comp, n, 0.05)) == pytest.approx(target, rel=1e-12)


def test_the_vectorised_solver_and_brent_one_by_one_agree():
    """More than a few roots go to scipy's vectorised solver, a few to Brent's method one by one:
    the same roots, tiny ones (below 1e-37) included, to the accuracy the budget allows."""
    rng = np.random.default_rng(1)
    q = np.concatenate([rng.uniform(0, 1, 60), 10 ** rng.uniform(-300, -1, 30), 1 - 10 ** rng.uniform(-15, -1, 30)])
    c = 10 ** rng.uniform(-12, 2, q.size)
    many_up, many_lo = kl_inverse_upper(q, c), kl_inverse_lower(q, c)
    one_up = np.array([kl_inverse_upper(a, b) for a, b in zip(q, c)])
    one_lo = np.array([kl_inverse_lower(a, b) for a, b in zip(q, c)])
    np.testing.assert_allclose(one_up, many_up, rtol=1e-15, atol=0)
    np.testing.assert_allclose(one_lo, many_lo, rtol=1e-13, atol=0)
    assert (many_lo < 1e-37).sum() >= 10  # the hard end is exercised
