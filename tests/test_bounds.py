"""PAC-Bayes bounds: formulas, orderings, monotonicity and regression tests."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacbayes_sft.bounds import (
    DeltaLedger,
    catoni_bound,
    dziugaite_roy_delta,
    dziugaite_roy_grid,
    finite_grid_delta,
    kl_inverse_upper,
    lambda_bound,
    maurer_bound,
    mc_risk_upper,
    mc_risk_upper_from_samples,
    mean_over_samples,
    optimal_lambda,
    quad_bound,
    seeger_bound,
    two_gap_bound,
)

R, KL, N, D = 0.12, 7.5, 2000, 0.05
B_TERM = KL + math.log(2 * math.sqrt(N) / D)


def test_maurer_formula():
    assert maurer_bound(R, KL, N, D) == pytest.approx(R + math.sqrt(B_TERM / (2 * N)), rel=1e-12)


def test_maurer_uses_ln_of_ratio_not_ratio_of_ln():
    # Regression: ln(2√n)/δ (a public-code mistake) instead of ln(2√n/δ).
    wrong = R + math.sqrt((KL + math.log(2 * math.sqrt(N)) / D) / (2 * N))
    assert maurer_bound(R, KL, N, D) < wrong - 1e-3


def test_seeger_formula_and_below_maurer():
    s = seeger_bound(R, KL, N, D)
    assert s == pytest.approx(kl_inverse_upper(R, B_TERM / N), rel=1e-12)
    assert s <= maurer_bound(R, KL, N, D)


def test_catoni_formula():
    C = 1.7
    ref = (1 - math.exp(-C * R - (KL + math.log(1 / D)) / N)) / (1 - math.exp(-C))
    assert catoni_bound(R, KL, N, D, C) == pytest.approx(ref, rel=1e-12)


def test_lambda_bound_optimum_and_equals_quad():
    lam = optimal_lambda(R, KL, N, D)
    assert lam == pytest.approx(2 / (math.sqrt(2 * N * R / B_TERM + 1) + 1), rel=1e-12)
    best = lambda_bound(R, KL, N, D)
    grid = np.linspace(0.001, 1.999, 20001)
    vals = lambda_bound(R, KL, N, D, lam=grid)
    assert best <= vals.min() + 1e-12
    # The λ-bound at its optimum is algebraically the quad bound.
    assert best == pytest.approx(quad_bound(R, KL, N, D), rel=1e-12)


def test_quad_formula():
    eta = B_TERM / (2 * N)
    assert quad_bound(R, KL, N, D) == pytest.approx((math.sqrt(R + eta) + math.sqrt(eta)) ** 2, rel=1e-12)


@pytest.mark.parametrize("fn", [maurer_bound, seeger_bound, lambda_bound, quad_bound])
def test_loss_range_rescaling(fn):
    a, b = -1.0, 3.0
    emp = 0.5
    unit = fn((emp - a) / (b - a), KL, N, D)
    assert fn(emp, KL, N, D, loss_range=(a, b)) == pytest.approx(a + (b - a) * unit, rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1e4), st.integers(1, 10**7), st.floats(1e-6, 0.999))
def test_seeger_never_looser_than_maurer(r, kl, n, d):
    assert seeger_bound(r, kl, n, d) <= maurer_bound(r, kl, n, d) + 1e-12


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 0.9), st.floats(0, 100), st.integers(5, 10**6), st.floats(1e-4, 0.5))
def test_monotonicity(r, kl, n, d):
    for fn in (maurer_bound, seeger_bound, lambda_bound, quad_bound):
        base = fn(r, kl, n, d)
        assert fn(r, kl + 1.0, n, d) >= base - 1e-12  # more KL, looser
        assert fn(r, kl, n * 2, d) <= base + 1e-12  # more data, tighter
        assert fn(r, kl, n, d / 2) >= base - 1e-12  # more confidence, looser
        assert fn(min(r + 0.05, 1.0), kl, n, d) >= base - 1e-12  # more risk, looser
        assert base >= r - 1e-15
    c = catoni_bound(r, kl, n, d, 2.0)
    assert catoni_bound(r, kl + 1, n, d, 2.0) >= c
    assert catoni_bound(r, kl, 2 * n, d, 2.0) <= c


def test_vectorised_bounds():
    r = np.array([0.0, 0.1, 0.5])
    out = seeger_bound(r, KL, N, D)
    assert out.shape == (3,)
    assert out[1] == pytest.approx(seeger_bound(0.1, KL, N, D))


def test_mc_risk_upper():
    assert mc_risk_upper(0.2, 100, 0.01) == pytest.approx(kl_inverse_upper(0.2, math.log(2 / 0.01) / 100), rel=1e-12)
    assert mc_risk_upper(0.2, 10_000, 0.01) < mc_risk_upper(0.2, 100, 0.01)


def test_mc_mean_divides_by_total_count():
    # Regression: averaging batches and dividing by the last batch index.
    batches = [np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5]), np.array([0.6])]
    mean, m = mean_over_samples(batches)
    assert m == 6
    assert mean == pytest.approx(np.mean(np.concatenate(batches)), rel=1e-15)
    assert mc_risk_upper_from_samples(batches, 0.05) == pytest.approx(mc_risk_upper(mean, 6, 0.05))


def test_ledger_refuses_overspending():
    led = DeltaLedger(0.05)
    led.spend("mc", 0.01)
    led.spend_fraction("tv", 0.2)
    rest = led.spend_rest("pac_bayes")
    assert rest == pytest.approx(0.03)
    assert led.spent == pytest.approx(0.05)
    with pytest.raises(ValueError, match="delta"):
        DeltaLedger(0.05).spend("x", 0.06)
    led2 = DeltaLedger(0.05)
    led2.spend("a", 0.04)
    with pytest.raises(ValueError, match="more than delta"):
        led2.spend("b", 0.02)
    with pytest.raises(ValueError, match="already"):
        led2.spend("a", 0.001)
    assert led.to_dict()["entries"][0] == {"term": "mc", "delta": 0.01}


def test_grids():
    assert finite_grid_delta(0.05, 10) == pytest.approx(0.005)
    # Regression: a geometric-grid index j <= 0 gave NaN/inf in public code; it is clamped.
    for j in (-3, 0, 1):
        v = dziugaite_roy_delta(0.05, j)
        assert math.isfinite(v) and v == pytest.approx(6 * 0.05 / math.pi**2)
    total = sum(dziugaite_roy_delta(0.05, j) for j in range(1, 200_000))
    assert total <= 0.05 and total == pytest.approx(0.05, rel=1e-4)
    j, lam, dj = dziugaite_roy_grid(scale=10.0, c=0.1, b=100, delta=0.05)  # scale above c → j would be < 0
    assert j == 1 and math.isfinite(lam) and math.isfinite(dj)
    j, lam, dj = dziugaite_roy_grid(scale=0.01, c=0.1, b=100, delta=0.05)
    assert j == round(100 * math.log(10)) and lam == pytest.approx(0.1 * math.exp(-j / 100))


def test_two_gap_bound_fields():
    tg = two_gap_bound(R, KL, N, 0.15, delta=D)
    assert tg.g_gen == pytest.approx(seeger_bound(R, KL, N, D) - R, rel=1e-12)
    assert tg.g_ext == pytest.approx(0.15)
    assert tg.total == pytest.approx(seeger_bound(R, KL, N, D) + 0.15)
    assert not tg.certified and "g_ext" in tg.estimated_terms
    d = tg.to_dict()
    for key in ("emp_risk", "g_gen", "g_ext", "eps", "total", "kl", "n", "tv", "delta", "method"):
        assert key in d
    tg2 = two_gap_bound(2.0, KL, N, 0.1, method="maurer", loss_range=(0, 4), eps=0.01, tv_certified=True)
    assert tg2.g_ext == pytest.approx(0.4)
    assert tg2.total == pytest.approx(maurer_bound(2.0, KL, N, 0.05, loss_range=(0, 4)) + 0.4 + 0.01)
    assert tg2.certified
    assert two_gap_bound(R, KL, N, 0.1, method="catoni", C=1.0).g_gen > 0


def test_two_gap_g_gen_shrinks_with_n_and_grows_with_kl():
    g = [two_gap_bound(0.1, 20.0, n, 0.1).g_gen for n in (100, 1000, 10000)]
    assert g[0] > g[1] > g[2]
    h = [two_gap_bound(0.1, kl, 1000, 0.1).g_gen for kl in (1, 10, 100)]
    assert h[0] < h[1] < h[2]


@pytest.mark.parametrize("method", ["seeger", "maurer", "catoni", "lambda", "quad"])
@pytest.mark.parametrize("loss_range", [(0.0, 1.0), (-1.0, 2.0)])
def test_infinite_kl_gives_the_trivial_bound_for_every_method(method, loss_range):
    from pacbayes_sft.bounds import pac_bayes_bound

    a, b = loss_range
    for emp in (a, a + 0.1 * (b - a), b):
        v = pac_bayes_bound(method, emp, float("inf"), 100, 0.05, loss_range=loss_range, C=1.0)
        assert v == b
    # and no method ever reports a risk above the loss range, however large the KL
    for kl in (1e3, 1e6):
        assert a <= pac_bayes_bound(method, a + 0.2 * (b - a), kl, 50, 0.05, loss_range=loss_range, C=2.0) <= b
