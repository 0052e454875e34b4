"""gaussian_kl against torch.distributions and a float64 Monte-Carlo estimate."""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pacbayes_sft.estimators import gaussian_kl
from pacbayes_sft.estimators import gaussian_kl as gk_module  # noqa: F401
from pacbayes_sft.posteriors.kl import CHUNK


def _ref(mq, mp, sq, sp):
    mq, mp = torch.as_tensor(mq, dtype=torch.float64), torch.as_tensor(mp, dtype=torch.float64)
    sq = torch.as_tensor(sq, dtype=torch.float64).expand_as(mq)
    sp = torch.as_tensor(sp, dtype=torch.float64).expand_as(mq)
    return float(kl_divergence(Normal(mq, sq), Normal(mp, sp)).sum())


def test_diagonal_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(500, generator=g), torch.randn(500, generator=g)
    sq, sp = torch.rand(500, generator=g) + 0.1, torch.rand(500, generator=g) + 0.1
    assert gaussian_kl(mq, mp, sq, sp) == pytest.approx(_ref(mq, mp, sq, sp), rel=1e-6)


def test_isotropic_closed_form_and_numpy():
    rng = np.random.default_rng(1)
    mq, mp = rng.normal(size=(30, 40)), rng.normal(size=(30, 40))
    sigma = 0.3
    assert gaussian_kl(mq, mp, sigma, sigma) == pytest.approx(((mq - mp) ** 2).sum() / (2 * sigma**2), rel=1e-12)
    assert gaussian_kl(mq, mp, 0.2, 0.7) == pytest.approx(_ref(mq, mp, 0.2, 0.7), rel=1e-10)


def test_monte_carlo_reference():
    # E_q[log q(x) − log p(x)] estimated in float64 with 4e5 draws, per-element sigmas.
    rng = np.random.default_rng(2)
    d = 3
    mq, mp = rng.normal(size=d), rng.normal(size=d)
    sq, sp = rng.uniform(0.5, 1.5, d), rng.uniform(0.5, 1.5, d)
    x = mq + sq * rng.standard_normal((400_000, d))

    def logpdf(x, m, s):
        return (-0.5 * ((x - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)).sum(axis=1)

    diff = logpdf(x, mq, sq) - logpdf(x, mp, sp)
    mc, se = diff.mean(), diff.std() / np.sqrt(len(diff))
    assert abs(gaussian_kl(mq, mp, sq, sp) - mc) < 5 * se


def test_sigma_is_standard_deviation_not_variance():
    # Regression: passing a variance where a standard deviation is expected.
    mq, mp = torch.ones(10), torch.zeros(10)
    kl_sd = gaussian_kl(mq, mp, 2.0, 2.0)
    assert kl_sd == pytest.approx(10 / (2 * 4.0))
    assert kl_sd != pytest.approx(10 / (2 * 2.0))


def test_streamed_iterables_equal_concatenation():
    g = torch.Generator().manual_seed(3)
    qs = [torch.randn(s, generator=g) for s in [(3, 4), (7,), (2, 2, 2)]]
    ps = [torch.randn(t.shape, generator=g) for t in qs]
    sqs = [torch.rand(t.shape, generator=g) + 0.2 for t in qs]
    whole = gaussian_kl(
        torch.cat([t.flatten() for t in qs]),
        torch.cat([t.flatten() for t in ps]),
        torch.cat([t.flatten() for t in sqs]),
        0.9,
    )
    assert gaussian_kl(iter(qs), (p for p in ps), sqs, 0.9) == pytest.approx(whole, rel=5e-7)


def test_chunk_boundaries_and_float64_accumulation():
    n = CHUNK * 3 + 17
    mq = torch.full((n,), 1e-3, dtype=torch.float32)
    mp = torch.zeros(n, dtype=torch.float32)
    exact = n * float(np.float32(1e-3)) ** 2 / 2
    # float32 squares carry ~1e-7 relative rounding; the sums themselves lose nothing.
    assert gaussian_kl(mq, mp, 1.0, 1.0) == pytest.approx(exact, rel=2e-7)
    sq = torch.full((n,), 0.5)
    assert gaussian_kl(mq, mp, sq, 1.0) == pytest.approx(_ref(mq, mp, 0.5, 1.0), rel=2e-7)
    # float64 inputs stay float64 throughout.
    assert gaussian_kl(mq.double(), mp.double(), 1.0, 1.0) == pytest.approx(
        n * 1e-6 / 2 * (float(np.float32(1e-3)) / 1e-3) ** 2, rel=1e-12
    )


def test_variance_part_is_accurate_when_scales_nearly_equal():
    # t² − 1 − 2 ln t ≈ 4(t−1)² cancels in low precision; the float64 path keeps it.
    n = 10_000
    sq = torch.full((n,), 1.0 + 1e-4, dtype=torch.float64)
    got = gaussian_kl(torch.zeros(n), torch.zeros(n), sq, 1.0)
    t = 1.0 + 1e-4
    assert got == pytest.approx(0.5 * n * (t * t - 1 - 2 * np.log(t)), rel=1e-6)


def test_inputs_not_modified_float64():
    mq = torch.randn(100, dtype=torch.float64)
    before = mq.clone()
    gaussian_kl(mq, torch.zeros(100, dtype=torch.float64), 1.0, 1.0)
    assert torch.equal(mq, before)


def test_zero_when_equal():
    t = torch.randn(50)
    assert gaussian_kl(t, t.clone(), 0.4, 0.4) == 0.0


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.zeros(3), torch.zeros(4), 1.0, 1.0), "same shape"),
        ((torch.zeros(3), torch.zeros(3), 0.0, 1.0), "sigma_q"),
        ((torch.zeros(3), torch.zeros(3), 1.0, -1.0), "sigma_p"),
        ((torch.zeros(3), torch.zeros(3), float("nan"), 1.0), "sigma_q"),
        ((torch.tensor([0.0, float("nan"), 1.0]), torch.zeros(3), 1.0, 1.0), "mu_q"),
        ((torch.zeros(3), torch.tensor([0.0, float("inf"), 1.0]), 1.0, 1.0), "mu_p"),
        ((torch.zeros(3), torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), 1.0), "sigma"),
        ((torch.zeros(3), torch.zeros(3), -torch.ones(3), -torch.ones(3)), "sigma_p"),
        ((torch.zeros(3), torch.zeros(3), torch.tensor([1.0, float("nan"), 1.0]), 1.0), "sigma_q"),
        ((torch.zeros(3), torch.zeros(3), torch.ones(4), 1.0), "sigma_q"),
        (([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)], 1.0, 1.0), "mu_p"),
        (([], [], 1.0, 1.0), "empty"),
        (("abc", torch.zeros(3), 1.0, 1.0), "mu"),
    ],
)
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        gaussian_kl(*args)
