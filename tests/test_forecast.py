"""The forecast recovers the best bucket on synthetic tables generated from the two-gap form."""

import numpy as np
import pandas as pd
import pytest

from pacbayes_sft.report.forecast import (
    fit_forecaster,
    forecast_table,
    held_out_predictions,
    learning_curve,
    score_predictors,
)


def _synthetic(budgets, seeds=(0, 1), noise=0.002, a=0.6, c=0.5, seed=0):
    """Buckets whose training risk falls and KL grows with n at different rates: at small n the
    easy bucket wins, at large n the hard one (its TV is smallest)."""
    rng = np.random.default_rng(seed)
    spec = {  # r0, r_exp, kl0, kl_exp, tv
        "easy": (0.02, -0.1, 30.0, 0.5, 0.60),
        "medium": (0.05, -0.3, 60.0, 0.5, 0.40),
        "hard": (0.20, -0.5, 120.0, 0.5, 0.25),
    }
    rows = []
    for b, (r0, re, k0, ke, tv) in spec.items():
        for n in budgets:
            for s in seeds:
                r, kl = r0 * n**re, k0 * n**ke
                test = r + a * np.sqrt(kl / n) + c * tv + rng.normal(0, noise)
                rows.append(
                    {
                        "base": "b",
                        "objective": "sft",
                        "bucket": b,
                        "n": n,
                        "seed": s,
                        "mc_mean_risk": r,
                        "kl": kl,
                        "tv": tv,
                        "test_risk": test,
                    }
                )
    return pd.DataFrame(rows), spec, a, c


def _true_best(spec, a, c, n):
    risk = {b: r0 * n**re + a * np.sqrt(k0 * n**ke / n) + c * tv for b, (r0, re, k0, ke, tv) in spec.items()}
    return min(risk, key=risk.get)


def test_forecast_recovers_the_known_best_where_it_changes():
    ct, spec, a, c = _synthetic([32, 64, 128, 256])
    f = fit_forecaster(ct)
    assert f.weights == pytest.approx((a, c), rel=0.1)
    bests = set()
    for n in (32, 4096, 65536):
        pred = f.predict(n)
        assert pred.loc[pred["best"], "bucket"].iloc[0] == _true_best(spec, a, c, n)
        bests.add(_true_best(spec, a, c, n))
    assert len(bests) >= 2  # the optimum really moves with n in this table
    assert (pred["lower"] <= pred["predicted_risk"]).all() and (pred["predicted_risk"] <= pred["upper"]).all()


def test_held_out_scoring_counts_forecast_and_baselines():
    ct, *_ = _synthetic([32, 64, 128, 256, 2048, 8192, 65536])  # easy is best up to 16384, then medium
    order = ["easy", "medium", "hard"]
    held = held_out_predictions(ct, order)
    assert set(held["n"]) == {128, 256, 2048, 8192, 65536}
    obs = ct.groupby(["base", "objective", "n", "bucket"])["test_risk"].mean().reset_index()
    opt = obs.loc[obs.groupby(["base", "objective", "n"])["test_risk"].idxmin()].rename(columns={"bucket": "observed"})
    opt = opt.assign(raw_bound="easy", calibrated="easy", determined=True)
    scores = score_predictors(held, opt).set_index("predictor")
    assert scores.loc["forecast", "exact"] >= scores.loc["persistence", "exact"]
    assert scores.loc["forecast", "exact"] == 1.0
    # the budgets whose optimum differs from the largest pilot's: persistence is wrong on each by
    # construction, and the forecast follows the change
    changed = int(scores.loc["forecast", "changed_budgets"])
    assert changed >= 1 and scores.loc["persistence", "exact_on_changed"] == 0.0
    assert scores.loc["forecast", "exact_on_changed"] == 1.0
    assert scores.loc["forecast", "mean_spearman"] > 0.8 and np.isnan(scores.loc["persistence", "mean_spearman"])


def test_forecast_needs_two_pilot_budgets():
    ct, *_ = _synthetic([32])
    with pytest.raises(ValueError, match="two or more budgets"):
        fit_forecaster(ct)
    ct, *_ = _synthetic([32, 64])
    with pytest.raises(ValueError, match="budget must be"):
        fit_forecaster(ct).predict(0)
    assert len(forecast_table(ct, 512)) == 3


def test_forecast_skips_groups_without_two_pilot_budgets():
    ct, *_ = _synthetic([32, 64])
    one, _, _, _ = _synthetic([32])
    both = pd.concat([ct, one.assign(objective="dft")], ignore_index=True)
    table = forecast_table(both, 512)
    assert set(table["objective"]) == {"sft"} and len(table) == 3
    assert table.attrs["skipped"] == ["b/dft (pilot budgets [32])"]
    with pytest.raises(ValueError, match="none has them: b/sft"):
        forecast_table(one, 512)


def test_learning_curve_follows_crossing_lines_that_persistence_misses():
    """Risks exactly linear in ln n: easy = 0.50 − 0.01 ln n, hard = 0.60 − 0.03 ln n cross at
    ln n = 5 (n ≈ 148); medium stays between them. Fitted on 16, 32, 64 (easy best), the curve
    picks hard at 512 and 4096 (the true best), recovers each risk to 1e-9, and ranks perfectly;
    persistence keeps easy."""
    true = {"easy": (0.50, -0.01), "medium": (0.56, -0.018), "hard": (0.60, -0.03)}
    budgets = [16, 32, 64, 512, 4096]
    rows = [
        {"base": "b", "objective": "sft", "bucket": b, "n": n, "seed": 0, "test_risk": u + v * np.log(n)}
        for b, (u, v) in true.items()
        for n in budgets
    ]
    ct = pd.DataFrame(rows).assign(mc_mean_risk=0.5, kl=10.0, tv=0.3)
    means = ct.groupby(["n", "bucket"])["test_risk"].mean()
    curve = learning_curve(means, [16, 32, 64], 4096)
    for b, (u, v) in true.items():
        assert curve[b] == pytest.approx(u + v * np.log(4096), abs=1e-9)
    held = held_out_predictions(ct, ["easy", "medium", "hard"]).set_index("n")
    assert held.loc[512, "learning_curve"] == "hard" and held.loc[4096, "learning_curve"] == "hard"
    assert held.loc[512, "persistence"] == "easy"
    assert held.loc[512, "learning_curve_spearman"] == pytest.approx(1.0)
