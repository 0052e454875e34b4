"""The bootstrap of the observed optimum, on simulated tables whose best bucket is known."""

import numpy as np
import pytest

from pacbayes_sft.uncertainty import bootstrap_best


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
