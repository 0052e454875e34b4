"""The race over buckets (sweep.allocation), against simulations whose best bucket is known."""

import math

import numpy as np
import pytest

from pacbayes_sft.sweep.allocation import (
    PairedRace,
    RaceResult,
    bernstein_half_width,
    look_delta,
    paired_interval,
    run_race,
)


def _bernoulli(means, rng, shared=0.0):
    """draw(contenders, round, n) of Bernoulli losses with exactly the given means. A fraction
    ``shared`` of the items is paired: there every bucket compares one uniform with its mean (a hard
    item is hard for all), elsewhere each bucket draws its own."""

    def draw(contenders, _round, n):
        u, paired = rng.random(n), rng.random(n) < shared
        return {b: (np.where(paired, u, rng.random(n)) < means[b]).astype(float) for b in contenders}

    return draw


def _right(res: RaceResult, means: dict, eps: float) -> bool:
    """The race's claim holds for the true means: the best alone, an ε-tie that holds the best and
    only buckets within ε of it, or survivors at the cap that hold the best."""
    best = min(means.values())
    bests = {b for b, m in means.items() if m == best}
    if res.reason == "best":
        return res.answer[0] in bests
    if res.reason == "epsilon_tie":
        return bool(bests & set(res.answer)) and all(means[b] - best <= eps for b in res.answer)
    return bool(bests & set(res.answer))


def test_half_width_is_the_closed_form():
    # sqrt(2·0.25·ln(40)/100) + 14·ln(40)/(3·99)
    assert bernstein_half_width(0.25, 100, 0.05) == pytest.approx(
        math.sqrt(0.5 * math.log(40) / 100) + 14 * math.log(40) / 297
    )
    assert bernstein_half_width(0.1, 1, 0.05) == math.inf
    assert look_delta(0.95, 3, 4) == pytest.approx(0.05 / (3 * 12))
    # over all looks and the K − 1 pairs with the best, the shares sum to 1 − level
    assert sum(look_delta(0.9, t, 5) for t in range(1, 200_000)) * 4 == pytest.approx(0.1, rel=1e-4)
    mean, lo, hi = paired_interval(np.array([0.0, 1.0, -1.0, 0.0]), 0.05)
    assert mean == 0 and hi - mean == pytest.approx(mean - lo)


def test_the_bound_covers_at_its_level_on_skewed_differences():
    """One-sided failures of the bound, simulated: at most δ (Maurer–Pontil is conservative)."""
    rng, delta, fails = np.random.default_rng(0), 0.2, 0
    for _ in range(2000):
        d = (rng.random(50) < 0.1).astype(float) - (rng.random(50) < 0.02)  # mean 0.08, skewed
        fails += paired_interval(d, delta)[2] < 0.08
    assert fails / 2000 <= delta


@pytest.mark.parametrize(
    "means,eps",
    [
        ({"easy": 0.30, "medium": 0.36, "hard": 0.45}, 0.02),  # a clear best
        ({"easy": 0.40, "medium": 0.41, "hard": 0.47}, 0.02),  # the best and a runner-up within ε
        ({"easy": 0.40, "medium": 0.43, "hard": 0.44}, 0.02),  # gaps just above ε: the cap often comes first
    ],
)
def test_the_answer_is_right_at_the_level_over_many_races(means, eps):
    reps = 300
    results = [
        run_race(
            _bernoulli(means, np.random.default_rng(r), shared=0.5),
            list(means),
            first_items=400,
            epsilon=eps,
            round_items=200,
            max_items=6000,
        )
        for r in range(reps)
    ]
    wrong = sum(not _right(res, means, eps) for res in results)
    # nominal error 5%; three binomial standard errors of margin at 300 races
    assert wrong / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    assert all(res.n_items <= 6000 for res in results)


def test_the_check_fails_a_race_without_a_valid_bound(monkeypatch):
    """The same check catches a race that looks at a one-standard-error interval after every round."""
    import pacbayes_sft.sweep.allocation as allocation

    monkeypatch.setattr(allocation, "bernstein_half_width", lambda v, n, d: math.sqrt(v / n) if n > 1 else math.inf)
    means, reps = {"easy": 0.40, "medium": 0.41, "hard": 0.47}, 300
    results = [
        run_race(
            _bernoulli(means, np.random.default_rng(r), shared=0.5),
            list(means),
            first_items=400,
            epsilon=0.02,
            max_items=6000,
        )
        for r in range(reps)
    ]
    assert sum(not _right(res, means, 0.02) for res in results) / reps > 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


def test_a_clear_best_is_named_and_the_losers_stop_getting_items():
    means = {"a": 0.2, "b": 0.5, "c": 0.35}
    res = run_race(_bernoulli(means, np.random.default_rng(1)), list(means), first_items=200, round_items=100)
    assert res.reason == "best" and res.answer == ("a",) and res.decided
    assert res.items_used["b"] < res.items_used["a"] and res.items_used["c"] <= res.items_used["a"]
    assert res.items_used["a"] == res.n_items and set(res.eliminated) == {"b", "c"}
    assert "a is the best bucket at 95%" == res.statement()


def test_close_buckets_end_in_an_epsilon_tie():
    means = {"a": 0.300, "b": 0.305, "c": 0.60}
    ties = 0
    for r in range(20):
        res = run_race(
            _bernoulli(means, np.random.default_rng(r), shared=0.5),
            list(means),
            first_items=400,
            epsilon=0.05,
            max_items=20_000,
        )
        ties += res.reason == "epsilon_tie" and set(res.answer) == {"a", "b"}
        assert res.items_used["c"] < res.items_used["a"]  # eliminated early, no more items
    assert ties == 20
    assert "within 0.05 of the best" in res.statement()


def test_the_cap_stops_an_open_race():
    means = {"a": 0.40, "b": 0.41}
    res = run_race(
        _bernoulli(means, np.random.default_rng(0)),
        list(means),
        first_items=300,
        epsilon=0.001,
        round_items=100,
        max_items=1000,
    )
    assert res.reason == "cap" and not res.decided and set(res.answer) == {"a", "b"}
    assert res.n_items == 1000 and res.rounds == 8  # 300 + 7 rounds of 100; an 8th would pass the cap


def test_state_is_a_bucket_by_item_matrix_and_eliminated_buckets_get_no_items():
    race = PairedRace(epsilon=0.01, round_items=4, max_items=1000)
    mid = np.zeros(400)
    mid[:2] = 1.0  # 0.005 above "good": not separable on 400 items
    race.partial_fit({"good": np.zeros(400), "bad": np.ones(400), "mid": mid})
    assert race.contenders_ == ["good", "mid"] and race.eliminated_ == {"bad": 0}
    race.partial_fit({"good": np.zeros(4), "mid": np.zeros(4)})
    m = race.losses_
    assert m.shape == (3, 404) and np.isnan(m[1, 400:]).all() and not np.isnan(m[[0, 2]]).any()
    # the pair with an eliminated bucket is compared on the items both have
    assert race.interval("good", "bad")[0] == -1.0
    with pytest.raises(ValueError, match="eliminated"):
        race.partial_fit({"good": np.zeros(4), "mid": np.zeros(4), "bad": np.zeros(4)})


def test_a_result_round_trips():
    res = run_race(_bernoulli({"a": 0.2, "b": 0.6}, np.random.default_rng(0)), ["a", "b"])
    assert RaceResult.from_dict(res.to_dict()) == res


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"level": 1.0}, "level"),
        ({"round_items": 0}, "round_items"),
        ({"max_items": 1}, "max_items"),
        ({"round_items": 2.5}, "round_items"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        PairedRace(**kwargs)


@pytest.mark.parametrize(
    "losses,needle",
    [
        ({"a": np.zeros(5)}, "at least two buckets"),
        ({"a": np.zeros(5), "b": np.zeros(6)}, "one length"),
        ({"a": np.zeros(5), "b": np.full(5, 1.5)}, r"in \[0, 1\]"),
        ({"a": np.zeros(5), "b": np.full(5, np.nan)}, "finite"),
        ({"a": np.zeros(1), "b": np.zeros(1)}, "at least 2 items"),
        ([0.1, 0.2], "mapping"),
    ],
)
def test_bad_rounds_name_the_argument(losses, needle):
    with pytest.raises(ValueError, match=needle):
        PairedRace().partial_fit(losses)


def test_rounds_after_the_first_have_the_fixed_size_and_a_stopped_race_takes_none():
    race = PairedRace(round_items=10).partial_fit({"a": np.zeros(50), "b": np.full(50, 0.02)})
    with pytest.raises(ValueError, match="round_items = 10"):
        race.partial_fit({"a": np.zeros(7), "b": np.zeros(7)})
    with pytest.raises(ValueError, match="contenders"):
        race.partial_fit({"a": np.zeros(10), "c": np.zeros(10)})
    done = PairedRace().partial_fit({"a": np.zeros(500), "b": np.ones(500)})
    assert done.done_ and done.result_.answer == ("a",)
    with pytest.raises(ValueError, match="stopped"):
        done.partial_fit({"a": np.zeros(200)})
    with pytest.raises(ValueError, match="buckets"):
        run_race(_bernoulli({"a": 0.1}, np.random.default_rng(0)), ["a", "a"])
