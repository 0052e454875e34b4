"""How often is the answer over training seeds wrong? A simulation with known truth of
:func:`pacbayes_sft.stats.seeds.decide_over_seeds` and the sweep's seed loop: one look once every
bucket has ``max_seeds`` seeds (the default, ``--min-seeds 0``), or a first look at ``min_seeds``
and one more seed for every bucket still in contention while the answer is open, up to
``max_seeds``.

Model: adapter (b, s) errs on item i with probability sigmoid(η_b + u_bs + v_i), seed effects
u_bs = τ(√ρ w_s + √(1−ρ) z_bs) (ρ: how much of a seed's luck the buckets share), item effects v_i
~ N(0, 1.5²); per-item losses are Bernoulli. A bucket's true risk R_b = E sigmoid(η_b + u + v) is
computed by quadrature; η_b is solved so that R is what the scenario asks. A wrong answer: a best
bucket whose R exceeds the smallest, an ε-tie holding a bucket more than ε above it, or an open
answer without the best bucket. Seed-effect shapes: ``normal`` (the model the interval assumes)
and ``bimodal`` (a seed is lucky or not, ±τ with equal probability).

    python experiments/seed_coverage.py --reps 600 --min-seeds 0
    python experiments/seed_coverage.py --reps 600 --min-seeds 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import optimize, special

from pacbayes_sft.stats.seeds import decide_over_seeds, look_schedule

ITEM_SD = 1.5
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(60)  # E f(Z), Z ~ N(0, 1) = Σ w f(node) / √(2π)


def true_risk(eta: float, tau: float, shape: str, rho: float) -> float:
    """R = E sigmoid(η + u + v) over the seed effect u and the item effect v (quadrature; a
    bimodal u = τ(√ρ w + √(1−ρ) z), w, z = ±1, takes four values)."""
    v = ITEM_SD * NODES
    w = WEIGHTS / WEIGHTS.sum()
    corners = [np.sqrt(rho) * a + np.sqrt(1 - rho) * b for a in (-1, 1) for b in (-1, 1)]
    us = tau * NODES if shape == "normal" else tau * np.array(corners)
    wu = w if shape == "normal" else np.full(4, 0.25)
    return float(sum(pu * (w * special.expit(eta + u + v)).sum() for u, pu in zip(us, wu)))


def eta_for(risk: float, tau: float, shape: str, rho: float) -> float:
    """η whose true risk is ``risk``."""
    return float(optimize.brentq(lambda e: true_risk(e, tau, shape, rho) - risk, -20, 20))


SCENARIOS = {  # name → true risks of three buckets (ε = 0.04)
    "clear_best": (0.40, 0.46, 0.52),
    "near_tie": (0.40, 0.41, 0.42),
    "just_beyond_eps": (0.40, 0.40, 0.445),
    "equal": (0.45, 0.45, 0.45),
}


def seed_effects(rng, k: int, s: int, tau: float, rho: float, shape: str) -> np.ndarray:
    """k × s seed effects, correlated across buckets by ρ for the same seed index."""
    draw = (lambda size: rng.standard_normal(size)) if shape == "normal" else (lambda size: rng.choice([-1.0, 1.0], size))
    return tau * (np.sqrt(rho) * draw((1, s)) + np.sqrt(1 - rho) * draw((k, s)))


def one_race(rng, risks, etas, tau, rho, shape, eps, level, n_items, min_seeds, max_seeds) -> tuple[bool, str, int]:
    """One simulated sweep group (``etas``: each bucket's η): (answer right, reason, seeds used by the best bucket)."""
    k = len(risks)
    u = seed_effects(rng, k, max_seeds, tau, rho, shape)
    v = ITEM_SD * rng.standard_normal(n_items)
    noise = rng.random((k, max_seeds, n_items))
    losses = (noise < special.expit(etas[:, None, None] + u[:, :, None] + v[None, None, :])).astype(float)
    names = [f"b{j}" for j in range(k)]
    schedule = look_schedule(2, max_seeds, min_seeds)  # the sweep's own: a race of two seeds
    seeds, excluded = dict.fromkeys(names, schedule[0]), ()
    looks = len(schedule)
    while True:
        d = decide_over_seeds({b: losses[j, : seeds[b]] for j, b in enumerate(names)}, epsilon=eps, level=level,
                              looks=looks, excluded=excluded)  # fmt: skip
        excluded = d.excluded
        if d.decided or max(seeds[b] for b in d.answer) >= max_seeds:
            break
        for b in d.answer:
            seeds[b] += 1
    best = min(risks)
    r = dict(zip(names, risks))
    if d.reason == "best":
        right = r[d.answer[0]] <= best + 1e-12
    elif d.reason == "epsilon_tie":
        right = all(r[b] - best <= eps + 1e-12 for b in d.answer)
    else:
        right = any(r[b] <= best + 1e-12 for b in d.answer)
    return right, d.reason, seeds[min(r, key=r.get)]


def simulate(scenario: str, *, tau: float, rho: float, shape: str, reps: int, eps: float = 0.04, level: float = 0.95,
             n_items: int = 1000, min_seeds: int = 0, max_seeds: int = 4, seed: int = 0) -> dict:  # fmt: skip
    """Wrong-answer rate and the answers' mix over ``reps`` simulated groups."""
    rng, risks = np.random.default_rng(seed), SCENARIOS[scenario]
    etas = np.array([eta_for(r, tau, shape, rho) for r in risks])
    runs = [one_race(rng, risks, etas, tau, rho, shape, eps, level, n_items, min_seeds, max_seeds) for _ in range(reps)]
    wrong = np.array([not r[0] for r in runs])
    reasons = [r[1] for r in runs]
    return {
        "scenario": scenario, "min_seeds": min_seeds, "max_seeds": max_seeds, "tau": tau, "rho": rho, "shape": shape,
        "reps": reps, "level": level,
        "wrong_rate": float(wrong.mean()), "wrong_se": float(np.sqrt(wrong.mean() * (1 - wrong.mean()) / reps)),
        "decided_rate": float(np.mean([x != "open" for x in reasons])),
        "best_rate": float(np.mean([x == "best" for x in reasons])),
        "mean_seeds_best_bucket": float(np.mean([r[2] for r in runs])),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--n-items", type=int, default=1000)
    ap.add_argument("--min-seeds", type=int, default=0, help="first look's seeds (0: one look, at --max-seeds)")
    ap.add_argument("--max-seeds", type=int, default=4)
    args = ap.parse_args()
    rows = []
    for shape in ("normal", "bimodal"):
        for tau in (0.0, 0.15, 0.4):
            for scenario in SCENARIOS:
                rows.append(simulate(scenario, tau=tau, rho=0.5, shape=shape, reps=args.reps, n_items=args.n_items,
                                     min_seeds=args.min_seeds, max_seeds=args.max_seeds))  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
