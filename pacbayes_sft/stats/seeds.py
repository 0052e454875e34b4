"""Deciding between buckets over training seeds as well as test items. Pure numpy/scipy.

A race (:mod:`~pacbayes_sft.stats.allocation`) certifies an answer about the adapters that were
trained: their seed-averaged risk on the test distribution. A user choosing data asks about the
bucket: its risk R_b = E_seed E_item ℓ over the randomness of training as well. For two buckets a, b
whose seeds s = 1..S are paired by index (seed s of both is trained from the same integer seed)
and evaluated on the same items i = 1..N, the paired differences follow the crossed model

    x_si = ℓ_a,s(i) − ℓ_b,s(i) = Δ + u_s + v_i + e_si,   Δ = R_a − R_b,

with seed effects u (var σ_s²), item effects v (σ_i²) and their interaction e (σ_e²), all
independent. The grand mean x̄ has Var x̄ = σ_s²/S + σ_i²/N + σ_e²/(SN), estimated from the
two-way mean squares (one observation per cell)

    MS_S = N Σ_s (x̄_s. − x̄)² / (S − 1),   MS_I = S Σ_i (x̄_.i − x̄)² / (N − 1),
    MS_E = Σ_si (x_si − x̄_s. − x̄_.i + x̄)² / ((S − 1)(N − 1)),

E MS_S = Nσ_s² + σ_e², E MS_I = Sσ_i² + σ_e², E MS_E = σ_e². So Var x̄ = (E MS_S + E MS_I −
E MS_E)/(SN), split into the seed part A = MS_S/(SN) (the variance of the per-seed means over S,
S − 1 degrees of freedom) and the item part B = max(MS_I − MS_E, 0)/(SN) (clipped at zero). The
interval is x̄ ∓ t_{S−1, 1−α} √(A + B): the degrees of freedom are the seed part's own S − 1, the
smallest of the parts'. (Satterthwaite's ν = (A + B)²/(A²/(S − 1) + B²/(N − 1)) jumps towards the
items' N − 1 whenever two seeds happen to agree, and then missed 3-5 times as often as α at the
small α a decision uses, in an independent review's simulation; S − 1 missed less than α there.)
With two seeds t_{1, 0.99} = 31.8: two seeds decide only what they agree on by a wide margin, and
more seeds narrow the interval.

The decision uses the race's rule (:class:`~pacbayes_sft.stats.allocation.PairedRace`): b is out
when some a has lower(x_b − x_a) > 0; one bucket left is the best; every pair of those left within
ε (upper ≤ ε) is an ε-tie; else the answer stays open. Each end is one-sided at
α = (1 − level) / ((K − 1) L): the race's split over the K − 1 pairs with the best bucket, and a
union over the L looks (one per seed count the sweep looks at, :func:`look_schedule`; one look by
default).

**An estimate, not a certificate.** The level holds under the normal crossed model (seed effects
roughly normal), for a fixed item count per pair (here the items a race chose to stop at, on the
first seeds: a small dependence, not covered by the split), which ``experiments/seed_coverage.py``
and ``tests/test_seeds.py`` check by simulation with known truth. A distribution-free interval
over S seeds (Hoeffding on the per-seed risks in [0, 1]) exists but is useless at a handful: when
all S seeds look alike, a seed distribution that gives a failed run with probability
p < 1 − α^(1/S) (0.78 at S = 2, 0.53 at S = 4, α = 0.05) shows that picture with probability above
α, so a valid interval must allow the risk to be up to p higher. A bucket's answer over seeds is
never reported as certified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ._validate import check_count, check_open_unit

SEED_REASONS = ("best", "epsilon_tie", "open")


@dataclass(frozen=True)
class SeedInterval:
    """One pair's interval of Δ = R_a − R_b over seeds and items: ``mean`` x̄, ``se`` √V̂, ``df`` ν,
    ``lower``/``upper`` the one-sided ends at α each, ``seeds`` S and ``items`` N it used."""

    mean: float
    se: float
    df: float
    lower: float
    upper: float
    seeds: int
    items: int


def mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """(MS_S, MS_I, MS_E) of a seeds × items matrix (S, N ≥ 2), as in the module docstring."""
    s, n = x.shape
    grand, rows, cols = x.mean(), x.mean(axis=1), x.mean(axis=0)
    ms_s = n * ((rows - grand) ** 2).sum() / (s - 1)
    ms_i = s * ((cols - grand) ** 2).sum() / (n - 1)
    ms_e = ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((s - 1) * (n - 1))
    return float(ms_s), float(ms_i), float(ms_e)


def crossed_interval(x: np.ndarray, alpha: float) -> SeedInterval:
    """The interval of the grand mean's expectation Δ from a seeds × items matrix ``x`` of paired
    differences (loss units; S ≥ 2 seeds, N ≥ 2 items), each end one-sided at ``alpha``: x̄ ∓
    t_{ν, 1−α} √V̂, V̂ and ν as in the module docstring."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"x must be a seeds x items matrix with at least 2 of each, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite")
    alpha = check_open_unit(alpha, "alpha")
    s, n = x.shape
    grand = x.mean()
    ms_s, ms_i, ms_e = mean_squares(x)
    # Var x̄ = σ_s²/S + σ_i²/N + σ_e²/(SN) = [MS_S + (MS_I − MS_E)] / (SN): the seed part MS_S/(SN) is the
    # variance of the per-seed means (σ_s² + σ_e²/N, S − 1 df), the item part the shared items' own.
    seed_part = ms_s / (s * n)
    item_part = max(ms_i - ms_e, 0.0) / (s * n)
    var = seed_part + item_part
    if var <= 0:  # every difference equal: no noise left, the mean is exact for these seeds and items
        return SeedInterval(float(grand), 0.0, np.inf, float(grand), float(grand), s, n)
    # ν = S − 1, the seed part's own degrees of freedom (the smallest of the parts'): Satterthwaite's ν
    # jumps to the items' N − 1 whenever two seeds agree by chance, and then misses 3-5 times too often
    df = float(s - 1)
    half = float(stats.t.ppf(1 - alpha, df)) * np.sqrt(var)
    return SeedInterval(float(grand), float(np.sqrt(var)), float(df), float(grand - half), float(grand + half), s, n)


def pair_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x_si = ℓ_a,s(i) − ℓ_b,s(i) on the seeds both have (paired by index) and the items both were
    evaluated on (a race's items are a prefix of one schedule, so the shorter row length)."""
    s, n = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:s, :n] - b[:s, :n]


def look_schedule(race_seeds: int, max_seeds: int, min_seeds: int) -> list[int]:
    """The seed counts at which the stage looks: from S₁ = max(S₀, 2, ``min_seeds`` or the top) to
    the top max(``max_seeds``, S₀), S₀ = ``race_seeds`` (the race's own seeds); empty when fewer
    than 2 seeds a bucket are allowed. Fixed before any of the stage's data is seen."""
    top = max(max_seeds, race_seeds)  # max_seeds 0: the race's own seeds, none trained
    return list(range(max(race_seeds, 2, min_seeds or top), top + 1))


@dataclass(frozen=True)
class SeedDecision:
    """The answer over seeds and items: ``answer`` (lowest mean first), ``reason`` ("best",
    "epsilon_tie" or "open"), ``excluded`` buckets, ``seeds`` per bucket, ``epsilon``, ``level``,
    ``alpha`` (each one-sided end) and ``intervals`` keyed "a-b" (Δ = R_a − R_b)."""

    answer: tuple[str, ...]
    reason: str
    excluded: tuple[str, ...]
    seeds: dict[str, int]
    epsilon: float
    level: float
    alpha: float
    intervals: dict[str, SeedInterval] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.reason != "open"

    def statement(self) -> str:
        """The answer in one sentence, saying it is an estimate."""
        pct, s = f"{self.level:.0%}", "/".join(str(v) for v in self.seeds.values())
        if self.reason == "best":
            what = f"{self.answer[0]} is the best bucket"
        elif self.reason == "epsilon_tie":
            what = f"any of {', '.join(self.answer)} is within {self.epsilon:g} of the best"
        else:
            what = f"open: the best is one of {', '.join(self.answer)}"
        return f"over seeds ({s} seeds): {what} at {pct} (an estimate: normal model of seed effects)"

    @classmethod
    def from_dict(cls, d: Mapping) -> SeedDecision:
        """A decision from :meth:`to_dict`'s JSON; ValueError naming what is missing."""
        need = {"answer", "reason", "excluded", "seeds", "epsilon", "level", "alpha"}
        if not isinstance(d, Mapping) or not need <= set(d):
            raise ValueError(f"a decision over seeds needs the keys {sorted(need)}")
        if d["reason"] not in SEED_REASONS:
            raise ValueError(f"a decision over seeds' reason must be one of {SEED_REASONS}, got {d['reason']!r}")
        return cls(
            answer=tuple(d["answer"]), reason=d["reason"], excluded=tuple(d["excluded"]),
            seeds={k: int(v) for k, v in d["seeds"].items()}, epsilon=float(d["epsilon"]), level=float(d["level"]),
            alpha=float(d["alpha"]),
            intervals={k: SeedInterval(**v) for k, v in d.get("intervals", {}).items()},
        )  # fmt: skip

    def to_dict(self) -> dict:
        keep = ("answer", "reason", "excluded", "seeds", "epsilon", "level", "alpha")
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in keep)}
        return out | {"intervals": {k: vars(v) for k, v in self.intervals.items()}, "certified": False}


def decide_over_seeds(
    losses: Mapping[str, np.ndarray],
    *,
    epsilon: float,
    level: float,
    looks: int = 1,
    excluded: tuple[str, ...] = (),
) -> SeedDecision:
    """Decide among the buckets of ``losses`` (bucket → seeds × items matrix of per-item losses in
    [0, 1], rows in seed order, columns a prefix of one item schedule) by the rule of the module
    docstring; ``excluded``: buckets out at an earlier look (they stay out); ``looks``: L."""
    epsilon, level = check_open_unit(epsilon, "epsilon"), check_open_unit(level, "level")
    looks = check_count(looks, "looks", 1)
    mats = {b: np.atleast_2d(np.asarray(v, dtype=float)) for b, v in losses.items()}
    if len(mats) < 2:
        raise ValueError(f"losses must hold at least two buckets, got {list(mats)!r}")
    for b, m in mats.items():
        if m.shape[0] < 2 or m.shape[1] < 2 or not np.isfinite(m).all() or (m < 0).any() or (m > 1).any():
            raise ValueError(f"losses of {b!r} must be a seeds x items matrix (>= 2 each) of values in [0, 1]")
    unknown = set(excluded) - set(mats)
    if unknown:
        raise ValueError(f"excluded names buckets not in losses: {sorted(unknown)}")
    alpha = (1.0 - level) / ((len(mats) - 1) * looks)
    left = [b for b in mats if b not in excluded]
    iv = {f"{a}-{b}": crossed_interval(pair_matrix(mats[a], mats[b]), alpha) for a in left for b in left if a != b}
    out = [b for b in left if any(iv[f"{b}-{a}"].lower > 0 for a in left if a != b)]
    out = [] if len(out) == len(left) else out  # all out: an interval failed; keep them all
    left = [b for b in left if b not in out]
    if len(left) == 1:
        reason = "best"
    elif all(iv[f"{a}-{b}"].upper <= epsilon for a in left for b in left if a != b):
        reason = "epsilon_tie"
    else:
        reason = "open"
    shared = min(mats[b].shape[1] for b in left)  # order the answer on the items all of them have
    means = {b: float(mats[b][:, :shared].mean()) for b in left}
    return SeedDecision(
        answer=tuple(sorted(left, key=lambda b: (means[b], b))),
        reason=reason,
        excluded=tuple(excluded) + tuple(out),
        seeds={b: int(m.shape[0]) for b, m in mats.items()},
        epsilon=epsilon,
        level=level,
        alpha=alpha,
        intervals=iv,
    )
