"""The race over buckets (stats.allocation) and its confidence sequences (stats.confidence),
against simulations whose best bucket, or mean, is known."""

import math

import numpy as np
import pytest

from pacbayes_sft.stats.allocation import CONFIDENCES, PairedRace, RaceResult, run_race
from pacbayes_sft.stats.confidence import (
    BettingState,
    advance,
    bernstein_half_width,
    betting_bounds,
    look_delta,
    paired_interval,
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


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize(
    "means,eps",
    [
        ({"easy": 0.30, "medium": 0.36, "hard": 0.45}, 0.02),  # a clear best
        ({"easy": 0.40, "medium": 0.41, "hard": 0.47}, 0.02),  # the best and a runner-up within ε
        ({"easy": 0.40, "medium": 0.43, "hard": 0.44}, 0.02),  # gaps just above ε: the cap often comes first
    ],
)
def test_the_answer_is_right_at_the_level_over_many_races(means, eps, confidence):
    reps = 300
    results = [
        run_race(
            _bernoulli(means, np.random.default_rng(r), shared=0.5),
            list(means),
            first_items=400,
            epsilon=eps,
            round_items=200,
            max_items=6000,
            confidence=confidence,
        )
        for r in range(reps)
    ]
    wrong = sum(not _right(res, means, eps) for res in results)
    # nominal error 5%; three binomial standard errors of margin at 300 races
    assert wrong / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    assert all(res.n_items <= 6000 for res in results)


def test_the_check_fails_a_race_without_a_valid_bound(monkeypatch):
    """The same check catches a race that looks at a one-standard-error interval after every round."""
    import pacbayes_sft.stats.confidence as confidence

    monkeypatch.setattr(confidence, "bernstein_half_width", lambda v, n, d: math.sqrt(v / n) if n > 1 else math.inf)
    means, reps = {"easy": 0.40, "medium": 0.41, "hard": 0.47}, 300
    results = [
        run_race(
            _bernoulli(means, np.random.default_rng(r), shared=0.5),
            list(means),
            first_items=400,
            epsilon=0.02,
            max_items=6000,
            confidence="bernstein",
        )
        for r in range(reps)
    ]
    assert sum(not _right(res, means, 0.02) for res in results) / reps > 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


@pytest.mark.parametrize(
    "confidence,means",
    [("bernstein", {"a": 0.2, "b": 0.5, "c": 0.35}), ("betting", {"a": 0.3, "b": 0.5, "c": 0.37})],
)
def test_a_clear_best_is_named_and_the_losers_stop_getting_items(confidence, means):
    draw = _bernoulli(means, np.random.default_rng(1))
    res = run_race(draw, list(means), first_items=200, round_items=100, confidence=confidence)
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
    assert RaceResult.from_dict(res.to_dict()) == res and res.confidence == "cmeb" == CONFIDENCES[0]
    assert res.to_dict()["confidence"] == "cmeb"
    for method in CONFIDENCES[1:]:  # results recorded with the older methods still load
        old = run_race(_bernoulli({"a": 0.2, "b": 0.6}, np.random.default_rng(0)), ["a", "b"], confidence=method)
        assert RaceResult.from_dict(old.to_dict()) == old and old.confidence == method


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"level": 1.0}, "level"),
        ({"round_items": 0}, "round_items"),
        ({"max_items": 1}, "max_items"),
        ({"round_items": 2.5}, "round_items"),
        ({"confidence": "stitched"}, "confidence"),
        ({"confidence": None}, "confidence"),
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


# --- the time-uniform confidence sequence ("betting") ------------------------------------------


def _prpl_eb(x, alpha, cap=0.5):
    """Waudby-Smith & Ramdas's PrPl-EB sequence written out item by item (their Thm 2 with the bets
    λ_t = min(c, sqrt(2 ln(2/α) / (σ̂²_{t−1} t ln(1 + t))))), running intersection."""
    log_term, mu_prev, var_prev = math.log(2 / alpha), 0.5, 0.25
    total = sq = bet = bet_x = penalty = 0.0
    lo, hi, out = 0.0, 1.0, []
    for t, xi in enumerate(x, 1):
        lam = min(cap, math.sqrt(2 * log_term / (var_prev * t * math.log(1 + t))))
        bet, bet_x = bet + lam, bet_x + lam * xi
        penalty += (xi - mu_prev) ** 2 * (-math.log(1 - lam) - lam)  # v ψ_E = 4 (x − μ̂)² · (−ln(1−λ) − λ)/4
        total += xi
        mu_prev = (0.5 + total) / (t + 1)
        sq += (xi - mu_prev) ** 2
        var_prev = (0.25 + sq) / (t + 1)
        lo, hi = max(lo, (bet_x - log_term - penalty) / bet), min(hi, (bet_x + log_term + penalty) / bet)
        out.append((lo, hi))
    return np.array(out).T


def test_rounds_of_one_item_are_prpl_eb_and_rounds_can_be_fed_one_at_a_time():
    x = np.random.default_rng(3).beta(0.5, 2.0, 300)
    lo, hi = betting_bounds(x, None, 0.05)
    want_lo, want_hi = _prpl_eb(x, 0.05)
    assert np.allclose(lo, want_lo, atol=1e-12) and np.allclose(hi, want_hi, atol=1e-12)
    assert 0 < lo[-1] < x.mean() < hi[-1] < 1 and hi[-1] - lo[-1] < 0.12
    # rounds: the bet is fixed per round; feeding them one by one gives the same sequence
    sizes = [100, 50, 50, 100]
    lo, hi = betting_bounds(x, sizes, 0.05)
    state, got = BettingState(0.05), []
    for a, b in zip(np.cumsum(sizes) - sizes, np.cumsum(sizes)):
        state, l1, h1 = advance(state, x[a:b])
        got.append((l1[0], h1[0]))
    assert np.allclose(np.array(got).T, [lo, hi], atol=1e-12) and state.n == 300
    assert state.mean == pytest.approx(x.mean())
    with pytest.raises(ValueError, match="sizes"):
        betting_bounds(x, [100, 100], 0.05)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        betting_bounds(x - 0.5, None, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        betting_bounds(x, None, 1.0)


@pytest.mark.parametrize("kind", ["bernoulli", "skewed"])
def test_the_sequence_covers_the_mean_at_every_prefix_at_once(kind):
    """2000 sequences of 2000 items: the true mean leaves the interval at some prefix in at most a
    fraction α of them; a mean 0.03 off is excluded at some prefix far more often (the test has power)."""
    rng, alpha, reps = np.random.default_rng(7), 0.1, 2000
    mean = 0.3 if kind == "bernoulli" else 0.1
    ever_out = ever_out_shifted = 0
    for _ in range(reps):
        x = (rng.random(2000) < 0.3).astype(float) if kind == "bernoulli" else rng.beta(0.3, 2.7, 2000)
        lo, hi = betting_bounds(x, None, alpha)
        ever_out += bool(((lo > mean) | (hi < mean)).any())
        ever_out_shifted += bool(((lo > mean + 0.03) | (hi < mean + 0.03)).any())
    assert ever_out / reps <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert ever_out_shifted / reps > (0.25 if kind == "bernoulli" else 0.99)


def test_a_stratified_first_round_is_covered_because_its_bet_is_fixed():
    """A first round of two strata, in order (means 0.05 then 0.95, average 0.5), then i.i.d. rounds
    of mean 0.5: the per-round bet covers at every round end; a bet that changed within the first
    round (PrPl-EB item by item) weighs the first stratum more and misses the mean at its end."""
    rng, alpha, reps = np.random.default_rng(11), 0.1, 500
    round_fixed = item_by_item = 0
    for _ in range(reps):
        first = np.concatenate([rng.random(200) < 0.05, rng.random(200) < 0.95]).astype(float)
        x = np.concatenate([first, (rng.random(2000) < 0.5).astype(float)])
        lo, hi = betting_bounds(x, [400] + [100] * 20, alpha)
        round_fixed += bool(((lo > 0.5) | (hi < 0.5)).any())
        lo, hi = betting_bounds(first, None, alpha)
        item_by_item += bool(lo[-1] > 0.5 or hi[-1] < 0.5)
    assert round_fixed / reps <= alpha and item_by_item / reps > 0.9


def test_the_sequence_is_narrower_than_the_union_over_looks():
    """Differences of small variance, ten rounds of 200: at n = 2000 the betting half-width is well
    under the empirical-Bernstein one at look 10 (δ_10 = δ / (3 · 110) for K = 4)."""
    d = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], size=2000, p=[0.01, 0.98, 0.01])
    race = PairedRace(round_items=200, max_items=10_000, epsilon=0.001, confidence="betting")
    union = PairedRace(round_items=200, max_items=10_000, epsilon=0.001, confidence="bernstein")
    for r in range(10):
        piece = d[200 * r : 200 * (r + 1)]
        for p in (race, union):
            p.partial_fit({"a": (piece + 1) / 2} | {b: np.full(200, 0.5) for b in ("b", "c", "e")})
    assert len(race.history_) == len(union.history_) == 10 and race.contenders_ == union.contenders_
    mean, lo, hi = race.interval("a", "b")
    half = (hi - lo) / 2  # in units of a − b = d / 2
    want = bernstein_half_width(float((d / 2).var(ddof=1)), 2000, look_delta(0.95, 10, 4))
    assert union.interval("a", "b")[2] - union.interval("a", "b")[0] == pytest.approx(want)
    assert mean == pytest.approx(d.mean() / 2) and lo < mean < hi
    assert half < 0.5 * want  # about 0.011 against 0.030
    assert race.interval("b", "a") == pytest.approx((-mean, -hi, -lo))  # the other order mirrors it


def _stream(means, seed, first=400, round_items=200, n_max=20_000, shared=0.5):
    """draw(contenders, round, n) over one fixed stream of items: round r is the same items (and
    losses) whichever buckets are left, so two races on it see the same data."""
    rng = np.random.default_rng(seed)
    u, paired = rng.random(n_max), rng.random(n_max) < shared
    losses = {b: (np.where(paired, u, rng.random(n_max)) < m).astype(float) for b, m in means.items()}

    def draw(contenders, rnd, n):
        start = 0 if rnd == 0 else first + (rnd - 1) * round_items
        return {b: losses[b][start : start + n] for b in contenders}

    return draw


def test_a_clear_gap_is_decided_on_fewer_items_than_the_union_bound_needs():
    means, kw = {"a": 0.30, "b": 0.34, "c": 0.40}, {"first_items": 400, "round_items": 200, "max_items": 20_000}
    items = {c: [] for c in CONFIDENCES}
    for seed in range(8):
        for c in CONFIDENCES:
            res = run_race(_stream(means, seed), list(means), confidence=c, **kw)
            assert res.reason == "best" and res.answer == ("a",) and res.confidence == c
            items[c].append(res.n_items)
    assert all(b < u for b, u in zip(items["betting"], items["bernstein"]))
    assert np.median(items["betting"]) <= 0.5 * np.median(items["bernstein"])  # 1400 against 4900
    assert all(m <= b for m, b in zip(items["cmeb"], items["betting"]))
    assert sum(items["cmeb"]) <= 0.85 * sum(items["betting"])  # 9,600 against 11,600


def test_an_old_result_reads_as_the_union_bound():
    old = {
        "answer": ["a"],
        "reason": "best",
        "epsilon": 0.02,
        "level": 0.95,
        "items_used": {"a": 600, "b": 400},
        "rounds": 3,
        "means": {"a": 0.2, "b": 0.4},
        "eliminated": {"b": 1},
    }
    res = RaceResult.from_dict(old)
    assert res.confidence == "bernstein" and res.to_dict() == old | {"confidence": "bernstein"}
    assert RaceResult.from_dict(res.to_dict()) == res and res.evaluations == 1000
    with pytest.raises(ValueError, match="confidence"):
        RaceResult.from_dict(old | {"confidence": "stitched"})
    # the original method is unchanged: its intervals are the closed form at the look's δ_t
    race = PairedRace(confidence="bernstein").partial_fit({"a": np.zeros(300), "b": np.full(300, 0.03)})
    mean, lo, hi = race.interval("a", "b")
    w = bernstein_half_width(0.0, 300, 0.05 / (1 * 2))  # K = 2, look 1
    assert mean == pytest.approx(-0.03) and (lo, hi) == pytest.approx((mean - w, mean + w))


def test_a_bad_confidence_names_the_argument():
    for bad in ("stitched", "Betting", 1):
        with pytest.raises(ValueError, match=r"confidence must be one of \('cmeb', 'betting', 'bernstein'\)"):
            PairedRace(confidence=bad)
    with pytest.raises(ValueError, match="confidence"):
        run_race(_bernoulli({"a": 0.1, "b": 0.2}, np.random.default_rng(0)), ["a", "b"], confidence="pr_eb")


def test_intervals_that_eliminate_every_bucket_leave_them_all_in(monkeypatch):
    """Only a failed interval can put every contender out (the best never is); the race then keeps
    them all instead of answering with an empty set."""
    race = PairedRace(epsilon=0.02, round_items=10, max_items=100)
    monkeypatch.setattr(race, "_bounds", lambda arrays, rnd: {("a", "b"): (0.0, 0.1, 0.2), ("b", "a"): (0.0, 0.1, 0.2)})
    race.partial_fit({"a": np.zeros(10), "b": np.ones(10)})
    assert race.contenders_ == ["a", "b"] and race.history_[-1].eliminated == ()
    assert not race.done_
