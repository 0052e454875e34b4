"""The bootstrap of the observed optimum, on simulated tables whose best bucket is known."""

import numpy as np
import pytest

from pacbayes_sft.report.uncertainty import bootstrap_best


def _table(rates, n_items, n_seeds, rng):
    # item difficulty shared by all buckets (paired items), bucket effect on top
    item = rng.normal(0, 1.0, n_items)
    return {
        b: (rng.random((n_seeds, n_items)) < 1 / (1 + np.exp(-(np.log(r / (1 - r)) + item)))).astype(float)
        for b, r in rates.items()
    }


def test_the_true_best_is_in_the_set_at_the_nominal_rate():
    rates = {"easy": 0.40, "medium": 0.34, "hard": 0.37}  # medium is best, hard is close
    covered = determined = 0
    reps = 60
    for rep in range(reps):
        res = bootstrap_best(_table(rates, 300, 2, np.random.default_rng(rep)), n_boot=400, seed=rep)
        covered += "medium" in res.indistinguishable
        determined += res.determined
        assert abs(sum(res.p_best.values()) - 1) < 1e-9
    assert covered / reps >= 0.88  # 95% nominal, 60 repetitions
    assert determined / reps < 0.9  # a 3-point gap on 300 items is often not determined


def test_a_large_gap_is_determined_and_p_best_concentrates():
    rates = {"easy": 0.6, "medium": 0.2, "hard": 0.45}
    res = bootstrap_best(_table(rates, 400, 3, np.random.default_rng(0)), n_boot=500)
    assert res.observed == "medium" and res.determined and res.p_best["medium"] > 0.99
    assert res.n_items == 400 and res.n_seeds == 3


def test_bad_inputs():
    with pytest.raises(ValueError, match="one shape"):
        bootstrap_best({"a": np.zeros(5), "b": np.zeros(6)})
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_best({"a": np.zeros(5)}, n_boot=3)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_best({"a": np.array([np.nan, 1.0])})


def _two_buckets(n_items, rng, p_best=0.40, p_second=0.45):
    return {
        "best": (rng.random(n_items) < p_best).astype(float),
        "second": (rng.random(n_items) < p_second).astype(float),
    }


# independent Bernoulli(0.40) and Bernoulli(0.45) losses: the paired gap d has mean 0.05 and
# variance 0.40·0.60 + 0.45·0.55 = 0.4875, so a two-sided 5% test has 80% power at
# ((1.96 + 0.8416) · sd / gap)² = 2.8016² · 0.4875 / 0.05² ≈ 1531 items (at 50% power, 1.96² · … ≈ 749)
NEEDED = (1.959964 + 0.841621) ** 2 * 0.4875 / 0.05**2
NEEDED_HALF = 1.959964**2 * 0.4875 / 0.05**2


def test_items_needed_matches_the_closed_form():
    from pacbayes_sft.report.uncertainty import items_needed

    res = bootstrap_best(_two_buckets(200_000, np.random.default_rng(0)), n_boot=100)
    assert res.items_needed == pytest.approx(NEEDED, rel=0.06)
    table = np.stack([np.atleast_2d(v) for v in _two_buckets(200_000, np.random.default_rng(1)).values()])
    assert items_needed(table, 0, power=0.5) == pytest.approx(NEEDED_HALF, rel=0.06)
    tie = bootstrap_best({"a": np.array([0.0, 1.0, 1.0]), "b": np.array([1.0, 0.0, 1.0])}, n_boot=100)
    assert tie.items_needed == np.inf
    assert np.isnan(bootstrap_best({"a": np.zeros(4)}, n_boot=100).items_needed)
    with pytest.raises(ValueError, match="power"):
        items_needed(table, 0, power=1.0)


def test_items_needed_is_where_the_bootstrap_determines_the_best_with_80_percent_power():
    """Simulated with known truth: at the predicted item count the gap reaches 1.96 standard errors
    in 80% of repetitions, so about 80% of them are determined; at a quarter of it
    Φ(2.80/2 − 1.96) ≈ 29%, at four times it Φ(2·2.80 − 1.96) ≈ 100% (normal approximation)."""
    rates = {}
    for factor in (0.25, 1.0, 4.0):
        n = round(factor * NEEDED)
        runs = [bootstrap_best(_two_buckets(n, np.random.default_rng(r)), n_boot=400, seed=r) for r in range(40)]
        rates[factor] = np.mean([r.observed == "best" and r.determined for r in runs])
    assert rates[0.25] <= 0.5 and 0.6 <= rates[1.0] <= 0.95 and rates[4.0] >= 0.95, rates


def test_gain_kept_paired_bootstrap_covers_the_truth_and_is_tighter_than_unpaired():
    """Known truth: base errs with p 0.8, the reference with 0.3, the model with the reference's
    error on most items (paired), so the true share kept is 1. The 95% interval covers it at about
    the nominal rate, and pairing makes it narrower than treating the model alone as noisy."""
    from pacbayes_sft.report.uncertainty import gain_kept

    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for rep in range(60):
        u = rng.random(200)
        base = (u < 0.8).astype(float)
        ref = (u < 0.3).astype(float)
        flip = rng.random(200) < 0.1  # the model differs from the reference on 10% of items, both ways
        model = np.where(flip, 1 - ref, ref)
        model = np.where(flip & (rng.random(200) < 0.5), ref, model)
        g = gain_kept(base, ref, model, n_boot=1000, seed=rep)
        true = (0.8 - (0.3 + 0.05 * (0.7 - 0.3))) / 0.5  # E[model error] = 0.3 + 0.05·(1 − 2·0.3)
        covered += g.lower <= true <= g.upper
        widths.append(g.upper - g.lower)
    assert covered >= 52  # ≥ 87% of 60 at a nominal 95%
    unpaired = 2 * 1.96 * np.sqrt(0.3 * 0.7 / 200) / 0.5  # the model's binomial SE alone, as the old figure
    assert np.mean(widths) < unpaired
    with pytest.raises(ValueError, match="improve"):
        gain_kept(np.zeros(10), np.ones(10), np.zeros(10))
    with pytest.raises(ValueError, match="same items"):
        gain_kept(np.ones(10), np.zeros(9), np.zeros(10))
