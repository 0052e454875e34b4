"""Racing the buckets of one group: the best bucket, or the buckets within ε of the best, at a
stated level, spending test items only while the answer is open. Pure numpy; no model code.

Setting. K buckets with unknown mean losses μ_b ∈ [0, 1] on the test distribution. Test items
come in rounds, and every bucket still in the race (a *contender*) is evaluated on the same items
of a round, so for two buckets a, b the per-item differences

    d_i = ℓ_a(x_i) − ℓ_b(x_i) ∈ [−1, 1],   E d_i = θ_ab = μ_a − μ_b,

are paired (an item's difficulty cancels). An eliminated bucket gets no later items; two buckets
are compared only on the items both were evaluated on.

Confidence: one interval [lower, upper] of θ_ab per pair and look, by the method ``confidence``.

``"cmeb"`` (the default for new races): per pair a time-uniform confidence sequence, the
conjugate-mixture empirical-Bernstein one of Howard et al. (2021, AoS; construction and proof in
:mod:`~pacbayes_sft.stats.mixture`) on x_i = (d_i + 1)/2 ∈ [0, 1], the pair's shared items in
schedule order, each end at one-sided error α = δ/(K − 1), δ = 1 − level (one end of each pair
is all the guarantee uses; see below):

    θ_ab ∈ [2 (Σx − u_α(V))/N − 1, 2 (Σx + u_α(V))/N − 1],   V = Σ (x_i − 1/2)² = Σ d_i²/4,

N the pair's items, u_α the gamma-exponential mixture boundary with scale c = 1/2 (x − 1/2 ∈
[−1/2, 1/2]) and ρ fixed before any race, intersected over the pair's looks. It holds at every round end at once: no share of δ per look.

``"betting"``: per pair the predictable plug-in empirical-Bernstein sequence of Waudby-Smith &
Ramdas (2023, JRSS-B, Thm 2; bets fixed per round; :mod:`~pacbayes_sft.stats.confidence`) on the
same x_i, at α = δ/(K − 1) two-sided (α/2 a side):

    θ_ab ∈ [2 L_r − 1, 2 U_r − 1],   L_r, U_r = (Σ λ_i x_i ∓ (ln(2/α) + Σ v_i ψ_E(λ_i))) / Σ λ_i,

intersected over the pair's looks.

``"bernstein"`` (the original): empirical Bernstein with a union bound over looks. At look
t = r + 1 (after round r; round 0 is the first look), on the N items a pair shares,

    θ_ab ∈ [d̄ − w, d̄ + w],   w = sqrt(2 V ln(2/δ_t) / N) + 14 ln(2/δ_t) / (3 (N − 1)),
    δ_t = δ / ((K − 1) · t (t + 1)),

with d̄, V the mean and sample variance (ddof 1) of the d_i: Maurer & Pontil's (2009, Thm 4)
one-sided bound for [0, 1] variables on (d + 1)/2 at δ_t a side. All three need independent items
whose means average to μ at each look: i.i.d. items, or rounds stratified by slice in the
mixture's proportions (hence "betting" keeps λ constant over every round; "cmeb" integrates a
constant λ out).

Why it is valid under optional stopping. Fix a best bucket b* (any one, if several tie). Look t
uses the first N_t items of a schedule fixed before the race (the first round's items, then
``round_items`` per round), so the event "the interval of (a, b*) fails at look t" is a property of
the items alone, whether or not the race reaches look t. Only one side of each pair with b* is
used below: the event needed is

    E = {for every a ≠ b* and every look: θ_{a b*} ≤ upper_{a b*}},

one one-sided event per a (upper_{a b*} = −lower_{b* a} when the pair is kept as (b*, a), so it is
the lower end of that sequence; either way it is one end of one sequence). "cmeb": each end of
each sequence fails at some look with probability ≤ α = δ/(K − 1), so P(not E) ≤ (K − 1)α = δ;
the other end of each pair with b*, and every pair without b*, may fail without harm. "betting":
each pair (a, b*) fails on either side at some look with probability ≤ δ/(K − 1) (the one side
used gets δ/(2(K − 1)): valid, twice as strict as needed). "bernstein":
Σ_t Σ_{a ≠ b*} δ / ((K − 1) t (t + 1)) = δ on each side. Either way P(E) ≥ ``level``: whenever the
race stops, whatever it eliminated, and also when a race stopped at the cap is continued. Only
pairs with b* matter, hence K − 1 and not K(K − 1)/2. (A schedule chosen from the losses would
break this.)

Decisions after each look, among the contenders S:

- b is eliminated when some a ∈ S is better at the level: lower_ba > 0;
- ``best``: one contender is left: the best bucket;
- ``epsilon_tie``: every pair of S is within ε at the level, upper_ab ≤ ε: any of S is within
  ε of the best (the guarantee of LUCB-ε, Kalyanakrishnan et al. 2012, for the whole set);
- ``cap``: neither, and another round would take the items past ``max_items``; the best is in S.

On E, b* is never eliminated (that needs lower_{b* a} > 0 for some a, i.e. upper_{a b*} < 0 ≤
θ_{a b*}), so it is the one left at **best** and among those left at the **cap**; and every a of an
ε-tie has μ_a − μ_{b*} ≤ upper_{a b*} ≤ ε (b* is in the tie). Every statement uses only upper ends
of pairs (a, b*), so each answer is right with probability ≥ ``level``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..defaults import RACE_EPSILON, RACE_LEVEL, RACE_MAX_ITEMS, RACE_ROUND_ITEMS
from ._validate import check_count, check_open_unit
from .confidence import BettingState, difference_interval, look_delta, paired_interval, paired_state
from .mixture import SCALE, MixtureState, mixture_advance, tuned_rho

STOP_REASONS = ("best", "epsilon_tie", "cap")
CONFIDENCES = ("cmeb", "betting", "bernstein")  # interval methods, the default first
LEGACY_CONFIDENCE = "bernstein"  # what a result saved before the key existed used


def _check_confidence(value: str) -> str:
    if value not in CONFIDENCES:
        raise ValueError(f"confidence must be one of {CONFIDENCES}, got {value!r}")
    return value


@dataclass(frozen=True)
class RoundDecision:
    """What one look decided: the round's index and size, who was eliminated, who is left, and the
    stop reason (None while the race goes on)."""

    round: int
    n_items: int
    eliminated: tuple[str, ...]
    contenders: tuple[str, ...]
    stop: str | None = None


@dataclass(frozen=True)
class RaceResult:
    """The answer of a race.

    answer: the best bucket alone (``reason == "best"``), the ε-tie set (``"epsilon_tie"``: any of
    them is within ε of the best) or the contenders left at the cap (``"cap"``: the best is among
    them), lowest mean loss first; items_used: the items each bucket was evaluated on; rounds: the
    looks taken (the first round included); means: each bucket's mean loss on its own items;
    eliminated: the round each eliminated bucket went out in; confidence: the interval method
    (:data:`CONFIDENCES`; "bernstein" for a result saved before the key existed).
    """

    answer: tuple[str, ...]
    reason: str
    epsilon: float
    level: float
    items_used: dict[str, int]
    rounds: int
    means: dict[str, float] = field(default_factory=dict)
    eliminated: dict[str, int] = field(default_factory=dict)
    confidence: str = "bernstein"

    @property
    def decided(self) -> bool:
        """Whether the race ended with a best bucket or an ε-tie (not at the cap)."""
        return self.reason != "cap"

    @property
    def n_items(self) -> int:
        """Distinct test items the race used (those of the buckets that stayed longest)."""
        return max(self.items_used.values())

    @property
    def evaluations(self) -> int:
        """(bucket, item) evaluations, Σ_b items_used[b]."""
        return sum(self.items_used.values())

    def statement(self) -> str:
        """The answer in one sentence."""
        pct = f"{self.level:.0%}"
        if self.reason == "best":
            return f"{self.answer[0]} is the best bucket at {pct}"
        if self.reason == "epsilon_tie":
            return f"any of {', '.join(self.answer)} is within {self.epsilon:g} of the best at {pct}"
        return f"not decided within {self.n_items} items: the best is one of {', '.join(self.answer)} at {pct}"

    def to_dict(self) -> dict:
        return asdict(self) | {"answer": list(self.answer)}

    @classmethod
    def from_dict(cls, d: Mapping) -> RaceResult:
        """A result from :meth:`to_dict`'s JSON; ValueError naming what is missing or wrong."""
        need = {"answer", "reason", "epsilon", "level", "items_used", "rounds"}
        if not isinstance(d, Mapping) or not need <= set(d):
            raise ValueError(f"a race result needs the keys {sorted(need)}")
        if d["reason"] not in STOP_REASONS:
            raise ValueError(f"a race result's reason must be one of {STOP_REASONS}, got {d['reason']!r}")
        return cls(
            answer=tuple(d["answer"]),
            reason=d["reason"],
            epsilon=float(d["epsilon"]),
            level=float(d["level"]),
            items_used={k: int(v) for k, v in d["items_used"].items()},
            rounds=int(d["rounds"]),
            means={k: float(v) for k, v in d.get("means", {}).items()},
            eliminated={k: int(v) for k, v in d.get("eliminated", {}).items()},
            confidence=_check_confidence(d.get("confidence", LEGACY_CONFIDENCE)),
        )


class PairedRace:
    """Sequential elimination over buckets with paired per-item losses (see the module docstring).

    Parameters: ``epsilon`` the tolerance of an ε-tie (loss units, in (0, 1)); ``level`` the
    probability that the answer is right; ``round_items`` the items of every round after the
    first (the first round may have any size ≥ 2, e.g. a committed test set); ``max_items`` the
    cap on distinct items; ``confidence`` the interval method, "cmeb" (conjugate-mixture
    confidence sequences, one-sided split), "betting" (betting confidence sequences) or
    "bernstein" (empirical Bernstein, union over looks).

    Feed rounds with :meth:`partial_fit` (one mapping bucket → losses per round, contenders only)
    until ``done_``; then ``result_`` holds the answer. Attributes after the first round:
    ``buckets_``, ``contenders_``, ``eliminated_`` (bucket → round), ``history_`` (one
    :class:`RoundDecision` per round), ``n_items_`` (distinct items so far), ``done_``, ``result_``.
    """

    def __init__(
        self,
        epsilon: float = RACE_EPSILON,
        level: float = RACE_LEVEL,
        round_items: int = RACE_ROUND_ITEMS,
        max_items: int = RACE_MAX_ITEMS,
        *,
        confidence: str = CONFIDENCES[0],
    ):
        self.epsilon = check_open_unit(epsilon, "epsilon")
        self.level = check_open_unit(level, "level")
        self.round_items = check_count(round_items, "round_items", 1)
        self.max_items = check_count(max_items, "max_items", 2)
        self.confidence = _check_confidence(confidence)
        self._states: dict[tuple[str, str], BettingState | MixtureState] = {}  # one sequence per pair
        self.buckets_: list[str] = []
        self.contenders_: list[str] = []
        self.eliminated_: dict[str, int] = {}
        self.history_: list[RoundDecision] = []
        self.n_items_ = 0
        self.done_ = False
        self.result_: RaceResult | None = None
        self._rounds: dict[str, list[np.ndarray]] = {}

    # --- state ------------------------------------------------------------------------------

    @property
    def losses_(self) -> np.ndarray:
        """buckets × items matrix of the losses so far (rows in ``buckets_`` order), NaN where a
        bucket was not evaluated (the items after its elimination)."""
        out = np.full((len(self.buckets_), self.n_items_), np.nan)
        for k, b in enumerate(self.buckets_):
            seen = np.concatenate(self._rounds[b]) if self._rounds[b] else np.empty(0)
            out[k, : seen.size] = seen
        return out

    def _shared(self, a: str, b: str) -> np.ndarray:
        """d_i = ℓ_a − ℓ_b on the items both were evaluated on (the rounds both took part in)."""
        k = min(len(self._rounds[a]), len(self._rounds[b]))
        return np.concatenate([x - y for x, y in zip(self._rounds[a][:k], self._rounds[b][:k])])

    def interval(self, a: str, b: str) -> tuple[float, float, float]:
        """(mean, lower, upper) of μ_a − μ_b on their shared items, at the last look (by ``confidence``)."""
        for name, v in (("a", a), ("b", b)):
            if v not in self._rounds:
                raise ValueError(f"{name} must be one of the race's buckets {self.buckets_}, got {v!r}")
        if self.confidence != "bernstein":
            return self._sequence(a, b) if a != b else (0.0, 0.0, 0.0)
        look = max(len(self.history_), 1)
        return paired_interval(self._shared(a, b), look_delta(self.level, look, len(self.buckets_)))

    def _sequence(self, a: str, b: str) -> tuple[float, float, float]:
        """(mean, lower, upper) of μ_a − μ_b from the pair's confidence sequence (or its mirror)."""
        if (a, b) in self._states:
            return difference_interval(self._states[(a, b)])
        mean, lower, upper = difference_interval(self._states[(b, a)])
        return -mean, -upper, -lower

    def _bounds(self, arrays: Mapping[str, np.ndarray], rnd: int) -> dict[tuple[str, str], tuple[float, float, float]]:
        """(mean, lower, upper) of every ordered pair of contenders after round ``rnd`` (losses ``arrays``)."""
        left = self.contenders_
        if self.confidence == "bernstein":
            delta = look_delta(self.level, rnd + 1, len(self.buckets_))
            return {(a, b): paired_interval(self._shared(a, b), delta) for a in left for b in left if a != b}
        if rnd == 0:
            self._states = {(a, b): self._new_sequence() for i, a in enumerate(left) for b in left[i + 1 :]}
        for (a, b), state in self._states.items():
            if a in arrays and b in arrays:
                d = arrays[a] - arrays[b]
                if isinstance(state, MixtureState):
                    self._states[(a, b)] = mixture_advance(state, (d + 1) / 2)[0]
                else:
                    self._states[(a, b)], _ = paired_state(state, d)
        return {(a, b): self._sequence(a, b) for a in left for b in left if a != b}

    def _new_sequence(self) -> BettingState | MixtureState:
        """One pair's sequence: "cmeb" at α = δ/(K − 1) on each end, "betting" at α two-sided."""
        alpha = (1 - self.level) / (len(self.buckets_) - 1)
        return MixtureState(alpha, tuned_rho(alpha), SCALE) if self.confidence == "cmeb" else BettingState(alpha)

    # --- one round ----------------------------------------------------------------------------

    def _check_round(self, losses: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
        if self.done_:
            raise ValueError(f"losses: the race has stopped ({self.result_.reason}); start a new PairedRace")
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError("losses must be a non-empty mapping bucket -> per-item losses")
        first = not self.buckets_
        if first and len(losses) < 2:
            raise ValueError(f"losses must hold at least two buckets to race, got {list(losses)}")
        want = list(losses) if first else self.contenders_
        if set(losses) != set(want):
            out = sorted(set(losses) & set(self.eliminated_))
            why = f"{out} were eliminated and get no more items; " if out else ""
            raise ValueError(f"losses: {why}give losses for exactly the contenders {want}, got {list(losses)}")
        arrays = {b: np.array(losses[b], dtype=float) for b in want}  # a copy: the race keeps it
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"losses must be one-dimensional arrays of one length, got shapes {sorted(sizes)}")
        n = next(iter(sizes))[0]
        if first and n < 2:
            raise ValueError(f"losses: the first round needs at least 2 items, got {n}")
        if not first and n != self.round_items:
            raise ValueError(f"losses: every round after the first has round_items = {self.round_items} items, got {n}")
        for b, a in arrays.items():
            if not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
                raise ValueError(f"losses of {b!r} must be finite and in [0, 1]")
        return arrays

    def partial_fit(self, losses: Mapping[str, Sequence[float]]) -> PairedRace:
        """Add one round (bucket → losses on the round's items, in the same item order for every
        contender), eliminate, and decide whether to stop. Returns self."""
        arrays = self._check_round(losses)
        if not self.buckets_:
            self.buckets_, self.contenders_ = list(arrays), list(arrays)
            self._rounds = {b: [] for b in arrays}
        rnd = len(self.history_)
        for b, a in arrays.items():
            self._rounds[b].append(a)
        self.n_items_ += next(iter(arrays.values())).size
        bounds = self._bounds(arrays, rnd)
        out = [b for b in self.contenders_ if any(bounds[(b, a)][1] > 0 for a in self.contenders_ if a != b)]
        out = [] if len(out) == len(self.contenders_) else out  # all out: an interval failed; keep them all
        self.contenders_ = [b for b in self.contenders_ if b not in out]
        self.eliminated_ |= dict.fromkeys(out, rnd)
        stop = self._stop(bounds)
        self.history_.append(
            RoundDecision(rnd, arrays[next(iter(arrays))].size, tuple(out), tuple(self.contenders_), stop)
        )
        if stop is not None:
            self.done_, self.result_ = True, self._result(stop)
        return self

    def _stop(self, bounds: Mapping[tuple[str, str], tuple[float, float, float]]) -> str | None:
        left = self.contenders_
        if len(left) == 1:
            return "best"
        if all(bounds[(a, b)][2] <= self.epsilon for a in left for b in left if a != b):
            return "epsilon_tie"
        if self.n_items_ + self.round_items > self.max_items:
            return "cap"
        return None

    def _result(self, reason: str) -> RaceResult:
        means = {b: float(np.concatenate(r).mean()) for b, r in self._rounds.items()}
        return RaceResult(
            answer=tuple(sorted(self.contenders_, key=lambda b: (means[b], b))),
            reason=reason,
            epsilon=self.epsilon,
            level=self.level,
            items_used={b: int(sum(x.size for x in r)) for b, r in self._rounds.items()},
            rounds=len(self.history_),
            means=means,
            eliminated=dict(self.eliminated_),
            confidence=self.confidence,
        )

    def end(self) -> PairedRace:
        """Stop now, at the cap, because no more items can be drawn (a test file used up). The
        intervals hold at every look, so stopping at any round keeps the guarantee; the best is
        among the contenders left."""
        if not self.buckets_:
            raise ValueError("end: the race has not had a round yet")
        if not self.done_:
            self.done_, self.result_ = True, self._result("cap")
        return self

    def fit(self, rounds: Iterable[Mapping[str, Sequence[float]]]) -> PairedRace:
        """:meth:`partial_fit` on each round until the race stops (later rounds are not read)."""
        for losses in rounds:
            self.partial_fit(losses)
            if self.done_:
                break
        return self


def run_race(
    draw: Callable[[list[str], int, int], Mapping[str, Sequence[float]]],
    buckets: Sequence[str],
    *,
    first_items: int = RACE_ROUND_ITEMS,
    epsilon: float = RACE_EPSILON,
    level: float = RACE_LEVEL,
    round_items: int = RACE_ROUND_ITEMS,
    max_items: int = RACE_MAX_ITEMS,
    confidence: str = CONFIDENCES[0],
) -> RaceResult:
    """Run a race to its stop: ``draw(contenders, round, n_items)`` returns the losses of a fresh
    round (the first has ``first_items`` items, every later one ``round_items``) for exactly the
    contenders, on shared items; ``confidence`` the interval method (:data:`CONFIDENCES`)."""
    first_items = check_count(first_items, "first_items", 2)
    if len(set(buckets)) != len(buckets) or len(buckets) < 2:
        raise ValueError(f"buckets must be at least two distinct names, got {list(buckets)!r}")
    race = PairedRace(epsilon=epsilon, level=level, round_items=round_items, max_items=max_items, confidence=confidence)
    race.partial_fit(draw(list(buckets), 0, first_items))
    while not race.done_:
        race.partial_fit(draw(list(race.contenders_), len(race.history_), round_items))
    return race.result_
