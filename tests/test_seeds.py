"""Deciding over training seeds (`stats.seeds`): the crossed-design variance against its closed
forms, the interval's coverage by Monte Carlo, and the sweep's seed loop against a simulation whose
buckets' risks over seeds are known."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pacbayes_sft.stats.seeds import SeedDecision, crossed_interval, decide_over_seeds

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
import seed_coverage  # noqa: E402


def test_the_variance_is_the_seed_means_spread_plus_the_shared_items_part():
    """Closed forms: A = var(per-seed means, ddof 1)/S; B = (MS_I − MS_E)/(SN) from the two-way table."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 50)) + rng.normal(size=(4, 1)) * 0.5 + rng.normal(size=(1, 50))
    s, n = x.shape
    a = x.mean(axis=1).var(ddof=1) / s
    ms_i = s * x.mean(axis=0).var(ddof=1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    ms_e = (resid**2).sum() / ((s - 1) * (n - 1))
    b = max(ms_i - ms_e, 0) / (s * n)
    iv = crossed_interval(x, 0.05)
    assert iv.se == pytest.approx(np.sqrt(a + b), rel=1e-12)
    assert iv.df == s - 1
    assert iv.upper - iv.mean == pytest.approx(stats.t.ppf(0.95, iv.df) * iv.se, rel=1e-12)
    assert iv.mean == pytest.approx(x.mean())


def test_identical_seeds_and_items_leave_no_noise():
    iv = crossed_interval(np.full((3, 10), 0.25), 0.01)
    assert iv.lower == iv.upper == 0.25 and iv.se == 0.0


@pytest.mark.parametrize("seeds,sd_seed", [(2, 0.0), (2, 0.05), (3, 0.05)])
def test_one_sided_coverage_by_monte_carlo_at_a_decisions_small_alpha(seeds, sd_seed):
    """x_si = Δ + u_s + v_i + e_si, Gaussian, at the α a three-bucket decision uses over three looks
    (0.05 / 6): each end fails at most about α, also when the seeds agree by chance (σ_s = 0), where
    Satterthwaite's degrees of freedom missed 0.02-0.04."""
    rng = np.random.default_rng(1)
    alpha, delta, reps, fails = 0.05 / 6, 0.03, 2500, np.zeros(2)
    for _ in range(reps):
        x = delta + sd_seed * rng.normal(size=(seeds, 1)) + 0.1 * rng.normal(size=(1, 400))
        x = x + 0.5 * rng.normal(size=(seeds, 400))
        iv = crossed_interval(x, alpha)
        fails += [iv.lower > delta, iv.upper < delta]
    assert np.all(fails / reps <= alpha + 3 * np.sqrt(alpha / reps)), fails / reps


def test_more_seed_spread_widens_the_interval_and_more_seeds_narrow_it():
    """On average over draws: wider with more seed spread, narrower with six seeds than with two."""
    rng = np.random.default_rng(2)

    def width(x):
        iv = crossed_interval(x, 0.05)
        return iv.upper - iv.lower

    calm, wild, two = [], [], []
    for _ in range(200):
        base = rng.normal(size=(6, 300)) * 0.5
        calm.append(width(base + 0.01 * rng.normal(size=(6, 1))))
        x = base + 0.2 * rng.normal(size=(6, 1))
        wild.append(width(x))
        two.append(width(x[:2]))
    assert np.mean(wild) > 2 * np.mean(calm)
    assert np.mean(wild) < np.mean(two) / 3


def test_a_clear_gap_is_the_best_and_equal_buckets_an_epsilon_tie():
    rng = np.random.default_rng(3)
    good = (rng.random((3, 2000)) < 0.2).astype(float)
    bad = (rng.random((3, 2000)) < 0.6).astype(float)
    d = decide_over_seeds({"a": good, "b": bad}, epsilon=0.05, level=0.95)
    assert d.reason == "best" and d.answer == ("a",) and d.excluded == ("b",)
    same = decide_over_seeds({"a": good, "b": good.copy()}, epsilon=0.05, level=0.95)
    assert same.reason == "epsilon_tie" and set(same.answer) == {"a", "b"}
    assert SeedDecision.from_dict(d.to_dict()) == d and d.to_dict()["certified"] is False
    assert "an estimate" in d.statement()


def test_an_excluded_bucket_stays_out_and_looks_split_the_error():
    rng = np.random.default_rng(4)
    m = {k: (rng.random((2, 400)) < 0.4).astype(float) for k in "abc"}
    d = decide_over_seeds(m, epsilon=0.01, level=0.9, looks=3, excluded=("c",))
    assert "c" in d.excluded and "c" not in d.answer
    assert d.alpha == pytest.approx(0.1 / (2 * 3))


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"losses": {"a": np.zeros((2, 5))}}, "at least two buckets"),
        ({"losses": {"a": np.zeros((1, 5)), "b": np.zeros((2, 5))}}, "losses of 'a'"),
        ({"losses": {"a": np.full((2, 5), 1.5), "b": np.zeros((2, 5))}}, "losses of 'a'"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"level": 1.0}, "level"),
        ({"looks": 0}, "looks"),
        ({"excluded": ("z",)}, "excluded"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, needle):
    args = {"losses": {"a": np.zeros((2, 5)), "b": np.ones((2, 5))}, "epsilon": 0.1, "level": 0.9} | kwargs
    with pytest.raises(ValueError, match=needle):
        decide_over_seeds(**args)


@pytest.mark.parametrize("min_seeds", [0, 2])
@pytest.mark.parametrize("scenario", ["near_tie", "just_beyond_eps"])
def test_the_seed_loop_is_wrong_at_most_at_its_level_with_known_truth(scenario, min_seeds):
    """Large seed effects (τ = 0.4 on the logit scale, about ±0.08 in risk per seed), one look at four
    seeds or a look at each of two to four: the simulated wrong-answer rate stays under 1 − level
    (0.05) within noise."""
    res = seed_coverage.simulate(scenario, tau=0.4, rho=0.5, shape="normal", reps=150, n_items=600, seed=11,
                                 min_seeds=min_seeds)  # fmt: skip
    assert res["wrong_rate"] <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 150), res


def test_one_look_at_four_seeds_decides_more_than_a_look_at_each_count():
    """The default schedule, against the same groups: with moderate seed effects a look at 2, 3 and 4
    seeds spends δ on looks that two or three seeds cannot decide; one look at 4 keeps it."""
    kw = {"tau": 0.15, "rho": 0.5, "shape": "normal", "reps": 80, "n_items": 1000, "seed": 12}
    one = seed_coverage.simulate("clear_best", min_seeds=0, **kw)
    each = seed_coverage.simulate("clear_best", min_seeds=2, **kw)
    assert one["wrong_rate"] == each["wrong_rate"] == 0.0
    assert one["best_rate"] > each["best_rate"] + 0.2, (one, each)
