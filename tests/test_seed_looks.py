"""The seed stage's look schedule (`racing.seed_stage.decide_seeds`): one look at ``max_seeds`` by
default, a look at every count from ``min_seeds`` otherwise, on stored rounds and a stand-in for
the trained adapters whose per-seed losses are known."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pacbayes_sft.racing.seed_stage import decide_seeds, stored_schedule
from pacbayes_sft.stats.seeds import look_schedule

N_ROUND = 50


def seed_losses(bucket: str, seed: int, rnd: int) -> list[float]:
    """0/1 losses of (bucket, seed) on round ``rnd``: bucket a errs on 20% of items, b on 80%."""
    rng = np.random.default_rng([ord(bucket), seed, rnd])
    return (rng.random(N_ROUND) < (0.2 if bucket == "a" else 0.8)).astype(float).tolist()


class StandIn:
    """What decide_seeds needs of :class:`Contenders`: every adapter already saved, losses known."""

    def __init__(self, out):
        self.out, self.scored = out, []

    def losses_on(self, cell, items):
        self.scored.append(cell.id)
        return np.asarray(seed_losses(cell.bucket, cell.seed, items))

    def drop(self, cells):
        pass


@pytest.fixture
def race(tmp_path):
    """A finished two-round race of buckets a and b on seeds 0 and 1, every later seed's adapter saved."""
    rounds = tmp_path / "race" / "g"
    rounds.mkdir(parents=True)
    for r in range(2):
        per_seed = {b: {str(s): seed_losses(b, s, r) for s in (0, 1)} for b in "ab"}
        mean = {b: list(np.mean([v["0"], v["1"]], axis=0)) for b, v in per_seed.items()}
        (rounds / f"round_{r:03d}.json").write_text(json.dumps({"losses": mean, "seed_losses": per_seed}))
    for b in "ab":
        for s in range(2, 6):
            (tmp_path / "adapters" / f"t__sft__n8__{b}__s{s}").mkdir(parents=True)
            (tmp_path / "adapters" / f"t__sft__n8__{b}__s{s}" / "adapter_config.json").write_text("{}")
    cells = {b: [SimpleNamespace(base="t", objective="sft", n=8, bucket=b, seed=s) for s in (0, 1)] for b in "ab"}
    return cells, rounds, StandIn(tmp_path)


def test_one_look_brings_every_bucket_to_max_seeds(race):
    cells, rounds, stand_in = race
    out = decide_seeds(cells, rounds, epsilon=0.05, level=0.9, max_seeds=4, contenders_of=lambda: stand_in,
                       items_of=lambda r: r)  # fmt: skip
    assert out["looks"] == 1 and out["look_seeds"] == [4] and out["alpha"] == pytest.approx(0.1)
    assert out["extra_seeds"] == {"a": [2, 3], "b": [2, 3]} and out["seeds"] == {"a": 4, "b": 4}
    assert out["reason"] == "best" and out["answer"] == ["a"]
    # each new seed scored on both rounds of its bucket, and saved under the race's folder
    assert sorted(stand_in.scored) == sorted(f"t__sft__n8__{b}__s{s}" for b in "ab" for s in (2, 3) for _ in range(2))
    assert len(list(rounds.glob("seed_*.json"))) == 4


def test_a_look_at_every_count_stops_at_the_first_decided_one(race):
    """A gap of 0.6 on 100 items is decided by two seeds: no seed is trained, δ is split over 3 looks."""
    cells, rounds, stand_in = race
    out = decide_seeds(cells, rounds, epsilon=0.05, level=0.9, max_seeds=4, min_seeds=2,
                       contenders_of=lambda: stand_in, items_of=lambda r: r)  # fmt: skip
    assert out["looks"] == 3 and out["look_seeds"] == [2, 3, 4] and out["alpha"] == pytest.approx(0.1 / 3)
    assert out["reason"] == "best" and out["seeds"] == {"a": 2, "b": 2} and out["extra_seeds"] == {}
    assert stand_in.scored == []


def test_min_seeds_between_starts_there(race):
    cells, rounds, stand_in = race
    out = decide_seeds(cells, rounds, epsilon=0.05, level=0.9, max_seeds=5, min_seeds=3,
                       contenders_of=lambda: stand_in, items_of=lambda r: r)  # fmt: skip
    assert out["look_seeds"] == [3, 4, 5] and out["seeds"] == {"a": 3, "b": 3}
    assert out["looks"] == 3 and out["alpha"] == pytest.approx(0.1 / 3)


@pytest.mark.parametrize(
    "race_seeds,max_seeds,min_seeds,looks",
    [
        (2, 4, 0, [4]),  # the default: one look at max_seeds
        (2, 4, 4, [4]),  # the same schedule, said the other way
        (2, 4, 2, [2, 3, 4]),
        (3, 5, 2, [3, 4, 5]),  # never below the race's own seeds
        (5, 4, 0, [5]),  # a race with more seeds than max_seeds: one look at its own
        (2, 0, 0, [2]),  # max_seeds 0: the race's own seeds, none trained
        (1, 0, 0, []),  # one seed, none to be trained: no look
    ],
)
def test_the_look_schedule_is_fixed_by_the_settings(race_seeds, max_seeds, min_seeds, looks):
    assert look_schedule(race_seeds, max_seeds, min_seeds) == looks


def test_a_stage_stored_before_min_seeds_reads_as_a_look_at_every_count():
    old = {"cell_seeds": [0, 1], "seeds": {"status": "done", "max_seeds": 3, "looks": 2}}
    assert stored_schedule(old) == [2, 3]
    assert stored_schedule(old | {"seeds": {"status": "done", "max_seeds": 0}}) == [2]  # its one look, at 2
    assert stored_schedule(old | {"seeds": {"status": "done", "look_seeds": [4]}}) == [4]
    assert stored_schedule(old | {"seeds": {"status": "skipped", "why": "x"}}) is None  # no look: no δ spent
    assert stored_schedule({"cell_seeds": [0]}) is None
