"""The race's confidence sequences on one simulated pair: items to a decision and miss rates.

    OMP_NUM_THREADS=1 python experiments/race_sequences.py --reps 4000 --cap 40000

Paired 0/1 losses of two buckets with correlation 0.5 (bucket b at 0.40, bucket a at 0.40 + gap,
so d = ℓ_a − ℓ_b has mean θ = gap), fed in rounds of 800 + 200 + 200 + … up to ``--cap`` items,
at α = 1/60 per pair (the race's δ/(K − 1) for 95% and K = 4). Per scenario (gaps 0.02, 0.03, 0.05;
an ε-tie θ = 0 with ε = 0.02) and method:

- ``betting``: the pair's betting sequence (:mod:`pacbayes_sft.stats.confidence`), two-sided at α;
- ``cmeb``: the conjugate-mixture sequence (:mod:`pacbayes_sft.stats.mixture`) at α on each end,
  the race's "cmeb" (only one end of each pair is used: docs/THEORY.md §10);
- ``cmeb-2s``: the same sequence two-sided at α (α/2 a side), to separate the construction's gain
  from the one-sided split's;
- ``bernstein``: empirical Bernstein at δ_t = α/(t(t + 1)) a side for look t.

A decision is the first round end whose interval excludes 0 (gaps) or lies in [−ε, ε] (the tie),
within the cap. A miss is an interval that excludes θ at some round end within the cap: on the
side a race uses (the upper end of θ_{a b*} below θ, b* = b) and on either side.
``n80`` is a fixed-sample paired z-test's items at 80% power, two-sided at α. Every method sees
the same streams; the vectorised sequences are checked against the package's own functions on the
first reps. Single-threaded: about a minute for 4,000 reps.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.special import ndtri

from pacbayes_sft.stats.confidence import BettingState, advance, round_bets
from pacbayes_sft.stats.mixture import (
    SCALE,
    MixtureState,
    best_rho,
    mixture_advance,
    mixture_boundary,
    tuned_rho,
)

SCENARIOS = {"gap 0.02": 0.02, "gap 0.03": 0.03, "gap 0.05": 0.05, "ε-tie (θ = 0)": 0.0}
BASE, CORRELATION = 0.40, 0.5


def pair_probabilities(gap: float) -> tuple[float, float]:
    """P(d = +1), P(d = −1) for 0/1 losses at BASE + gap (a) and BASE (b) with CORRELATION."""
    pa, pb = BASE + gap, BASE
    both = pa * pb + CORRELATION * math.sqrt(pa * (1 - pa) * pb * (1 - pb))
    return pa - both, pb - both


def rounds(first: int, size: int, cap: int) -> np.ndarray:
    """Round sizes: the first, then ``size`` each while the total stays within ``cap``."""
    return np.array([first] + [size] * ((cap - first) // size))


class Sequences:
    """The running sums of every method for ``reps`` independent pairs (vectorised over reps);
    ``mixtures``: name → (α of each end, ρ, scale c) of each CM-EB variant."""

    def __init__(self, reps: int, alpha: float, mixtures: dict[str, tuple[float, float, float]]):
        self.alpha, self.mixtures, self.n = alpha, mixtures, 0
        z = np.zeros(reps)
        self.total = z.copy()  # Σ x
        self.sq_mix = {m: z.copy() for m in mixtures}  # Σ (x − μ̂_{i−1})², μ̂ clipped to [1 − c, c]
        self.sq_bet, self.bet, self.bet_x, self.pen = z.copy(), z.copy(), z.copy(), z.copy()
        self.sum_d, self.sum_d2 = z.copy(), z.copy()
        self.lo = {m: np.full(reps, -1.0) for m in self.methods}
        self.hi = {m: np.full(reps, 1.0) for m in self.methods}

    @property
    def methods(self) -> list[str]:
        return ["betting", *self.mixtures, "bernstein"]

    def feed(self, d: np.ndarray, look: int) -> None:
        """One round of differences d (reps × items), then every method's interval of E d."""
        x, n0 = (d + 1) / 2, self.n
        t = n0 + np.arange(1, x.shape[1] + 1)
        cum = self.total[:, None] + np.cumsum(x, axis=1)
        mu_prev = (0.5 + np.concatenate([self.total[:, None], cum[:, :-1]], axis=1)) / t
        mu_now = (0.5 + cum) / (t + 1)
        # betting: one bet for the round from the variance before it (confidence.advance)
        var = (0.25 + self.sq_bet) / (n0 + 1)
        lam = round_bets(self.alpha, var, np.full(var.shape, n0 + x.shape[1]), first=False)
        if n0 == 0:
            lam = np.minimum(0.5, np.sqrt(2 * math.log(2 / self.alpha) / (var * x.shape[1])))
        self.bet += lam * x.shape[1]
        self.bet_x += lam * x.sum(1)
        self.pen += ((x - mu_prev) ** 2).sum(1) * (-np.log1p(-lam) - lam)
        self.sq_bet += ((x - mu_now) ** 2).sum(1)
        for m, (_, _, c) in self.mixtures.items():
            self.sq_mix[m] += ((x - np.clip(mu_prev, 1 - c, c)) ** 2).sum(1)
        self.total, self.n = cum[:, -1], t[-1]
        mean = self.total / self.n
        log_term = math.log(2 / self.alpha)
        self._update(
            "betting", (self.bet_x - log_term - self.pen) / self.bet, (self.bet_x + log_term + self.pen) / self.bet
        )
        for m, (a, rho, c) in self.mixtures.items():
            w = mixture_boundary(self.sq_mix[m], a, rho, c) / self.n
            self._update(m, mean - w, mean + w)
        self.sum_d += d.sum(1)
        self.sum_d2 += (d**2).sum(1)
        dbar = self.sum_d / self.n
        v = np.maximum(self.sum_d2 - self.n * dbar**2, 0) / (self.n - 1)
        lt = math.log(2 * look * (look + 1) / self.alpha)
        w = np.sqrt(2 * v * lt / self.n) + 14 * lt / (3 * (self.n - 1))
        self.lo["bernstein"] = np.maximum(self.lo["bernstein"], dbar - w)
        self.hi["bernstein"] = np.minimum(self.hi["bernstein"], dbar + w)

    def _update(self, m: str, lower_x: np.ndarray, upper_x: np.ndarray) -> None:
        self.lo[m] = np.maximum(self.lo[m], 2 * np.clip(lower_x, 0, 1) - 1)
        self.hi[m] = np.minimum(self.hi[m], 2 * np.clip(upper_x, 0, 1) - 1)


def check_against_package(d_rounds: list[np.ndarray], seq_lo: dict, seq_hi: dict, alpha: float, mixtures: dict) -> None:
    """The vectorised sums of rep 0 against the package's own sequences after the same rounds."""
    x = np.concatenate([r[0] for r in d_rounds])
    sizes = [r.shape[1] for r in d_rounds]
    _, lo, hi = advance(BettingState(alpha), (x + 1) / 2, sizes)
    assert np.allclose([2 * lo[-1] - 1, 2 * hi[-1] - 1], [seq_lo["betting"][0], seq_hi["betting"][0]], atol=1e-9)
    for m, (a, rho, c) in mixtures.items():
        _, lo, hi = mixture_advance(MixtureState(a, rho, c), (x + 1) / 2, sizes)
        assert np.allclose([2 * lo[-1] - 1, 2 * hi[-1] - 1], [seq_lo[m][0], seq_hi[m][0]], atol=1e-9), m


def simulate(gap: float, args: argparse.Namespace, mixtures: dict, seed: int) -> dict[str, dict]:
    """Items to a decision and misses of every method on ``args.reps`` pairs at ``gap``."""
    rng = np.random.default_rng([args.seed, seed])
    up, down = pair_probabilities(gap)
    seq = Sequences(args.reps, args.alpha, mixtures)
    decided = {m: np.full(args.reps, np.inf) for m in seq.methods}
    miss_up = {m: np.zeros(args.reps, bool) for m in seq.methods}
    miss_any = {m: np.zeros(args.reps, bool) for m in seq.methods}
    history = []
    for look, size in enumerate(rounds(args.first, args.round_items, args.cap), start=1):
        u = rng.random((args.reps, size))
        d = (u < up).astype(float) - ((u >= up) & (u < up + down))
        seq.feed(d, look)
        if look <= 3:
            history.append(d[:1])
            check_against_package(history, seq.lo, seq.hi, args.alpha, mixtures)
        for m in seq.methods:
            lo, hi = seq.lo[m], seq.hi[m]
            hit = (lo > 0) if gap > 0 else ((lo >= -args.epsilon) & (hi <= args.epsilon))
            decided[m] = np.where(np.isinf(decided[m]) & hit, seq.n, decided[m])
            miss_up[m] |= hi < gap
            miss_any[m] |= (hi < gap) | (lo > gap)
    return {m: {"items": decided[m], "miss_up": miss_up[m].mean(), "miss_any": miss_any[m].mean()} for m in seq.methods}


def fixed_n80(gap: float, alpha: float) -> float:
    """Items of a fixed-sample paired z-test at 80% power, two-sided at α."""
    up, down = pair_probabilities(gap)
    sd = math.sqrt(up + down - gap**2)
    return ((ndtri(1 - alpha / 2) + ndtri(0.8)) * sd / gap) ** 2 if gap > 0 else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--cap", type=int, default=40_000, help="items, the first round included")
    ap.add_argument("--first", type=int, default=800)
    ap.add_argument("--round-items", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=1 / 60, help="error per pair")
    ap.add_argument("--epsilon", type=float, default=0.02)
    ap.add_argument("--variants", nargs="*", default=[], help="extra cmeb variants V_OPT:SCALE (ρ tuned at V_OPT)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    half = args.alpha / 2
    mixtures = {"cmeb": (args.alpha, tuned_rho(args.alpha), SCALE), "cmeb-2s": (half, tuned_rho(half), SCALE)}
    for spec in args.variants:
        v_opt, c = (float(x) for x in spec.split(":"))
        mixtures[f"cmeb@{spec}"] = (args.alpha, best_rho(v_opt, args.alpha), c)
    t0 = time.perf_counter()
    print(f"α = {args.alpha:.4g} per pair, {args.reps} reps, rounds {args.first} + {args.round_items}, cap {args.cap}")
    print("| scenario | method | median items | × betting | × n80 | decided | miss (side used) | miss (either) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for k, (name, gap) in enumerate(SCENARIOS.items()):
        res, n80 = simulate(gap, args, mixtures, k), fixed_n80(gap, args.alpha)
        base = float(np.median(res["betting"]["items"]))
        for m, r in res.items():
            med = float(np.median(r["items"]))
            print(f"| {name} | {m} | {med:,.0f} | {med / base:.2f} | {med / n80:.2f} | "
                  f"{np.isfinite(r['items']).mean():.3f} | {r['miss_up']:.4f} | {r['miss_any']:.4f} |")  # fmt: skip
        print(f"| {name} | fixed n80 | {n80:,.0f} | | | | | |" if gap > 0 else "", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s; α = {args.alpha:.4f}; inf: undecided in most reps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
