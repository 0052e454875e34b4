"""Coverage simulations with known truth: do the bounds hold at the promised rate?

Run small in the tests and large by ``experiments/coverage.py`` (tables in docs/VALIDITY.md).

1. PAC-Bayes bounds. x ~ N(0, 1), y = 1[x > 0] flipped with probability η. Classifier
   h_w(x) = 1[x > w], 0-1 loss. Prior N(0, s_p²) over w (fixed before data), posterior
   Q = N(ŵ, s²) with ŵ fitted on the sample. Everything is exact:
   R(w) = η + (1 − 2η)|Φ(w) − ½|; E_Q R by Gauss–Hermite quadrature (exact to ~1e-12);
   E_Q R̂_S = (1/n) Σ_i P_Q(h_w(x_i) ≠ y_i) = (1/n) Σ_i Φ(±(x_i − ŵ)/s) in closed form;
   KL(Q‖P) in closed form. Over many samples, the violation rate of each bound must be ≤ δ.
2. Monte-Carlo slack: m posterior draws, mc_risk_upper must cover the exact E_Q R̂_S at rate ≥ 1 − δ'.
3. The δ ledger: K candidate posteriors whose per-example losses are independent Bernoulli(p)
   (all with true risk p); the one with the smallest bound is reported. Spending δ/K per
   candidate keeps the violation rate ≤ δ; spending δ on each (no union correction) does not.
4. TV: classifier_tv(...).lower below the exact TV of Gaussian pairs; bias/spread of .estimate
   (clipped) and .raw_estimate (unclipped, the lower bound in expectation).
5. IRT recovery (Spearman, RMSE) against the number of subjects and the missing rate.
6. Races (:func:`race_coverage`): buckets whose per-item losses are Bernoulli with known means on
   slices of unequal difficulty, rounds stratified by slice; the answer (best, ε-tie, or the
   survivors at the cap) must be right at rate ≥ level, by every interval method, also when a
   bucket sits just beyond ε (a wrong ε-tie would hold it).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr
from scipy.stats import binomtest

from . import defaults
from .bounds import (
    MC_SCHEMES,
    catoni_bound,
    kl_inverse_upper,
    lambda_bound,
    maurer_bound,
    mc_risk_upper,
    quad_bound,
    seeger_bound,
)
from .data import generate
from .estimators.classifier_tv import classifier_tv
from .estimators.irt import fit_irt
from .estimators.tv_reference import exact_gaussian_scale_tv as var_tv
from .estimators.tv_reference import exact_gaussian_tv
from .report.uncertainty import bootstrap_best
from .stats.allocation import CONFIDENCES, run_race


def _rate_interval(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def threshold_problem_risks(
    rng: np.random.Generator, n: int, reps: int, *, eta: float = 0.1, s: float = 0.3, s_prior: float = 1.0
) -> dict[str, np.ndarray]:
    """Exact E_Q R, E_Q R̂_S and KL for ``reps`` independent samples of size n (vectorised)."""
    x = rng.standard_normal((reps, n))
    y = (x > 0).astype(float)
    flip = rng.random((reps, n)) < eta
    y = np.where(flip, 1 - y, y)
    # ŵ: a data-dependent fit — the midpoint between the class means (any rule is allowed).
    m1 = (x * y).sum(1) / np.maximum(y.sum(1), 1)
    m0 = (x * (1 - y)).sum(1) / np.maximum((1 - y).sum(1), 1)
    w_hat = 0.5 * (m0 + m1)
    z = (x - w_hat[:, None]) / s
    # y = 1 is an error when w ≥ x: P = 1 − Φ((x − ŵ)/s); y = 0 is an error when w < x: P = Φ((x − ŵ)/s).
    emp = np.where(y == 1, ndtr(-z), ndtr(z)).mean(1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # ∫ f(w) N(w; ŵ, s²) dw
    w = w_hat[:, None] + s * nodes[None, :]
    true_w = eta + (1 - 2 * eta) * np.abs(ndtr(w) - 0.5)
    true = (true_w * weights).sum(1) / weights.sum()
    kl = np.log(s_prior / s) + (s**2 + w_hat**2) / (2 * s_prior**2) - 0.5
    return {"true": true, "emp": emp, "kl": kl, "w_hat": w_hat}


def bound_coverage(n: int = 200, reps: int = 10_000, delta: float = defaults.DELTA, *, seed: int = 0, catoni_c: float = 2.0):
    """Violation rate (with a 95% interval) and mean slack of each bound on the threshold problem."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    r = threshold_problem_risks(rng, n, reps)
    bounds = {
        "seeger": seeger_bound(r["emp"], r["kl"], n, delta),
        "maurer": maurer_bound(r["emp"], r["kl"], n, delta),
        "catoni": catoni_bound(r["emp"], r["kl"], n, delta, catoni_c),
        "lambda": lambda_bound(r["emp"], r["kl"], n, delta),
        "quad": quad_bound(r["emp"], r["kl"], n, delta),
    }
    rows = []
    for name, b in bounds.items():
        viol = int((b < r["true"]).sum())
        lo, hi = _rate_interval(viol, reps)
        rows.append(
            {
                "bound": name,
                "n": n,
                "reps": reps,
                "delta": delta,
                "violation_rate": viol / reps,
                "ci_low": lo,
                "ci_high": hi,
                "mean_slack": float((b - r["true"]).mean()),
                "mean_true_risk": float(r["true"].mean()),
                "mean_kl": float(r["kl"].mean()),
            }
        )
    return pd.DataFrame(rows)


def mc_coverage(
    n: int = 200,
    m: int = 20,
    reps: int = 2000,
    delta: float = defaults.DELTA,
    *,
    seed: int = 1,
    s: float = 0.3,
    scheme: str = "shared",
):
    """Rate at which mc_risk_upper covers the exact E_Q R̂_S.

    scheme "shared": m posterior draws, each scoring all n examples (N = m independent risks);
    "per_example": every example gets m draws of its own (N = n·m independent losses).
    """
    if scheme not in MC_SCHEMES:
        raise ValueError(f"scheme must be one of {MC_SCHEMES}, got {scheme!r}")
    rng = np.random.default_rng(seed)
    r = threshold_problem_risks(rng, n, reps, s=s)
    # Regenerate the samples to evaluate the empirical risk of sampled thresholds.
    rng2 = np.random.default_rng(seed)
    x = rng2.standard_normal((reps, n))
    y = (x > 0).astype(float)
    y = np.where(rng2.random((reps, n)) < 0.1, 1 - y, y)
    if scheme == "shared":
        w = r["w_hat"][:, None, None] + s * rng.standard_normal((reps, m, 1))  # one draw for all examples
        n_losses = m
    else:
        w = r["w_hat"][:, None, None] + s * rng.standard_normal((reps, m, n))  # own draws per example
        n_losses = n * m
    # loss of each drawn threshold on each example: error if (x > w) != y
    errs = ((x[:, None, :] > w).astype(float) != y[:, None, :]).mean((1, 2))
    upper = mc_risk_upper(errs, n_losses, delta)
    cover = int((upper >= r["emp"] - 1e-12).sum())
    lo, hi = _rate_interval(cover, reps)
    return {
        "scheme": scheme,
        "m": m,
        "n": n,
        "reps": reps,
        "delta": delta,
        "coverage": cover / reps,
        "ci_low": lo,
        "ci_high": hi,
        "mean_slack": float((upper - r["emp"]).mean()),
    }


def ledger_demo(n: int = 100, k: int = 200, p: float = 0.3, reps: int = 10_000, delta: float = defaults.DELTA, *, seed: int = 2):
    """Selecting the best of K candidates: violation rate with δ/K per candidate vs δ each."""
    rng = np.random.default_rng(seed)
    counts = rng.binomial(n, p, size=(reps, k))
    emp = counts.min(1) / n  # the data-chosen candidate has the smallest empirical risk (KL = 0 for each)
    c = np.log(2 * np.sqrt(n) / delta) / n
    with_union = kl_inverse_upper(emp, np.log(2 * np.sqrt(n) / (delta / k)) / n)
    without = kl_inverse_upper(emp, c)
    out = {}
    for name, b in (("union (delta/K each)", with_union), ("no correction (delta each)", without)):
        v = int((b < p).sum())
        lo, hi = _rate_interval(v, reps)
        out[name] = {"violation_rate": v / reps, "ci_low": lo, "ci_high": hi}
    return {"n": n, "K": k, "p": p, "reps": reps, "delta": delta, "results": out}


def tv_coverage(settings=None, reps: int = 50, delta: float = defaults.DELTA, *, seed: int = 3, n_threads: int | None = 1):
    """classifier_tv on Gaussian pairs with exact TV: how often .lower ≤ TV; bias/spread of the
    clipped .estimate and of .raw_estimate (the lower bound in expectation), with the Monte-Carlo
    standard error of the raw bias. The "same" setting (TV = 0) shows the upward bias of clipping."""
    import pandas as pd

    settings = settings or [
        ("same", 1, 0.0, 1.0, 320),
        ("mean 0.5", 1, 0.5, 1.0, 500),
        ("mean 1.0", 1, 1.0, 1.0, 500),
        ("mean 1.0, d=5", 5, 1.0, 1.0, 500),
        ("sd 2.0", 1, 0.0, 2.0, 500),
        ("mean 1.0", 1, 1.0, 1.0, 2000),
    ]
    rng = np.random.default_rng(seed)
    rows = []
    for label, d, mu, sd, n in settings:
        exact = exact_gaussian_tv(mu) if sd == 1.0 else var_tv(sd)
        est, raw, low = [], [], []
        for r in range(reps):
            p = rng.standard_normal((n, d))
            q = rng.standard_normal((n, d)) * sd
            q[:, 0] += mu
            res = classifier_tv(p, q, delta=delta, n_permutations=0, random_state=r, n_threads=n_threads)
            est.append(res.estimate)
            raw.append(res.raw_estimate)
            low.append(res.lower)
        est, raw, low = np.array(est), np.array(raw), np.array(low)
        cover = int((low <= exact + 1e-12).sum())
        lo, hi = _rate_interval(cover, reps)
        rows.append(
            {
                "setting": label,
                "dim": d,
                "n_per_side": n,
                "exact_tv": exact,
                "reps": reps,
                "lower_coverage": cover / reps,
                "ci_low": lo,
                "ci_high": hi,
                "estimate_bias": float(est.mean() - exact),
                "estimate_sd": float(est.std(ddof=1)),
                "raw_bias": float(raw.mean() - exact),
                "raw_bias_se": float(raw.std(ddof=1) / np.sqrt(reps)),
            }
        )
    return pd.DataFrame(rows)


def irt_recovery(subjects=(50, 200, 800), missing=(0.0, 0.5, 0.8), items: int = 60, *, seed: int = 4):
    """Spearman and RMSE of fitted 2PL difficulties against the truth."""
    import pandas as pd
    from scipy.stats import spearmanr

    rng = np.random.default_rng(seed)
    rows = []
    for j in subjects:
        for miss in missing:
            th, b = rng.standard_normal(j), rng.standard_normal(items)
            a = np.exp(rng.normal(0, 0.3, items))
            P = 1 / (1 + np.exp(-a * (th[:, None] - b[None, :])))
            Y = (rng.random((j, items)) < P).astype(float)
            Y[rng.random((j, items)) < miss] = np.nan
            res = fit_irt(Y, "2pl")
            rows.append(
                {
                    "subjects": j,
                    "missing_rate": miss,
                    "items": items,
                    "spearman": float(spearmanr(res.difficulty, b)[0]),
                    "rmse": float(np.sqrt(np.mean((res.difficulty - b) ** 2))),
                }
            )
    return pd.DataFrame(rows)


def bootstrap_coverage(reps: int = 200, *, n_items: int = 320, seed: int = 0, n_boot: int = 500):
    """The optimum's bootstrap on simulated tables with a known best bucket: how often the true
    best is in the 95% indistinguishable set, and how often the optimum is called determined,
    for a small and a large gap between the two best buckets."""
    import pandas as pd

    rows = []
    for gap in (0.02, 0.05, 0.10):
        rates = {"easy": 0.45, "medium": 0.30, "hard": 0.30 + gap}
        covered = determined = 0
        for r in range(reps):
            rng = np.random.default_rng(seed + r)
            item = rng.normal(0, 1.0, n_items)  # shared item difficulty: the buckets' losses are paired
            table = {
                b: (rng.random(n_items) < 1 / (1 + np.exp(-(np.log(p / (1 - p)) + item)))).astype(float)
                for b, p in rates.items()
            }
            res = bootstrap_best(table, n_boot=n_boot, seed=r)
            covered += "medium" in res.indistinguishable
            determined += res.determined
        rows.append(
            {
                "gap": gap,
                "n_items": n_items,
                "reps": reps,
                "true_best_covered": covered / reps,
                "determined": determined / reps,
            }
        )
    return pd.DataFrame(rows)


def igsm_tv_truth(n_per_side: int = 512, *, seed: int = 0):
    """The default TV proxy against the exact op-marginal TV of each 2-op bucket vs the uniform
    op 1-8 test mixture (0.75 for every bucket), and on two samples of one distribution (0)."""
    import pandas as pd

    def texts(ops, s, split):
        return [p.prompt + " " + p.response for p in generate(n_per_side, ops, split=split, seed=s)]

    test = texts(list(range(1, 9)), seed + 100, "test")
    rows = []
    for name, ops in (("op 1-2", [1, 2]), ("op 3-4", [3, 4]), ("op 5-6", [5, 6]), ("op 7-8", [7, 8])):
        r = classifier_tv(texts(ops, seed + ops[0], "train"), test, n_permutations=0, n_threads=1)
        rows.append(
            {
                "train": name,
                "test": "op 1-8 uniform",
                "exact_op_marginal_tv": 0.75,
                "estimate": r.estimate,
                "lower": r.lower,
                "chosen": ", ".join(sorted(set(r.fold_classifiers))),
            }
        )
    r = classifier_tv(
        texts([1, 2, 3, 4], seed + 200, "train"),
        texts([1, 2, 3, 4], seed + 201, "train"),
        n_permutations=0,
        n_threads=1,
    )
    rows.append(
        {
            "train": "op 1-4",
            "test": "op 1-4 (same distribution)",
            "exact_op_marginal_tv": 0.0,
            "estimate": r.estimate,
            "lower": r.lower,
            "chosen": ", ".join(sorted(set(r.fold_classifiers))),
        }
    )
    return pd.DataFrame(rows)


RACE_SCENARIOS = {
    "clear gap": (0.40, 0.45, 0.50),
    "near tie": (0.40, 0.41, 0.47),
    "exact tie": (0.40, 0.40, 0.40),
    "just beyond ε": (0.40, 0.425, 0.50),
}
"""Bucket means of :func:`race_coverage`'s scenarios (ε = 0.02; "just beyond ε": the runner-up is
ε + 0.005 worse, so an ε-tie that holds it is wrong)."""


def _stratified_draw(means: tuple, offsets: np.ndarray, rng: np.random.Generator):
    """``draw(contenders, round, n)`` of a race: n items in equal shares over the slices (each slice
    shifts every bucket's probability by its offset, and bucket b by (−1)^b of it: the buckets trade
    places across slices), half of them paired through one uniform (a hard item is hard for all)."""
    k = len(offsets)

    def draw(contenders: list[str], _round: int, n: int) -> dict[str, np.ndarray]:
        slice_of = np.arange(n) % k
        u, paired = rng.random(n), rng.random(n) < 0.5
        out = {}
        for b in contenders:
            i = int(b[1:])
            p = means[i] + offsets[slice_of] * (0.5 if i % 2 else 1.0)
            out[b] = (np.where(paired, u, rng.random(n)) < p).astype(float)
        return out

    return draw


def race_answer_right(res, means: dict[str, float], epsilon: float) -> bool:
    """Whether a race's answer holds for the true bucket ``means``: it holds a best bucket, and an
    ε-tie holds only buckets within ε of the best (a single best or a cap's survivors need only the first)."""
    best = min(means.values())
    if not any(means[b] == best for b in res.answer):
        return False
    return res.reason != "epsilon_tie" or all(means[b] - best <= epsilon for b in res.answer)


def race_coverage(reps: int = 200, *, level: float = 0.95, epsilon: float = 0.02, max_items: int = 20_000, seed: int = 0):
    """How often a race's answer is wrong (the true best missing from it, or a bucket more than ε
    worse in an ε-tie), for each scenario of :data:`RACE_SCENARIOS` and each interval method, on
    8 slices with offsets from −0.2 to +0.2 (a mean of 0, so each bucket's mean is as stated);
    first round 800 items, then rounds of 200, every round stratified by slice."""
    import pandas as pd

    offsets = np.linspace(-0.2, 0.2, 8)
    rows = []
    for name, means in RACE_SCENARIOS.items():
        for method in CONFIDENCES:
            wrong = decided = items = 0
            for r in range(reps):
                draw = _stratified_draw(means, offsets, np.random.default_rng([seed, r]))
                res = run_race(draw, [f"b{i}" for i in range(len(means))], first_items=800, epsilon=epsilon,
                               level=level, round_items=200, max_items=max_items, confidence=method)  # fmt: skip
                ok = race_answer_right(res, {f"b{i}": m for i, m in enumerate(means)}, epsilon)
                wrong, decided, items = wrong + (not ok), decided + res.decided, items + res.n_items
            lo, hi = _rate_interval(wrong, reps)
            rows.append({"scenario": name, "means": means, "confidence": method, "reps": reps, "level": level,
                         "wrong_rate": wrong / reps, "ci_low": lo, "ci_high": hi, "decided": decided / reps,
                         "mean_items": items / reps})  # fmt: skip
    return pd.DataFrame(rows)
