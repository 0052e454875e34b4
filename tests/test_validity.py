"""Small coverage simulations that fail if a bound, the MC slack, the ledger or the TV bound breaks."""

import pytest

from pacbayes_sft import validation as v


def test_pac_bayes_bounds_hold_and_seeger_is_tightest():
    df = v.bound_coverage(n=100, reps=2000, delta=0.05, seed=10)
    assert (df["ci_low"] <= 0.05).all() and (df["violation_rate"] <= 0.05).all()
    slack = df.set_index("bound")["mean_slack"]
    assert slack.idxmin() == "seeger"
    assert (slack > 0).all()


def test_exact_risks_of_threshold_problem_match_simulation():
    # The closed-form E_Q R̂_S and quadrature E_Q R agree with brute-force Monte Carlo.
    import numpy as np
    from scipy.special import ndtr

    rng = np.random.default_rng(0)
    r = v.threshold_problem_risks(rng, 50, 1, s=0.3)
    w = r["w_hat"][0] + 0.3 * np.random.default_rng(1).standard_normal(400_000)
    true_mc = (0.1 + 0.8 * np.abs(ndtr(w) - 0.5)).mean()
    assert r["true"][0] == pytest.approx(true_mc, abs=2e-3)


def test_mc_slack_covers():
    res = v.mc_coverage(n=100, m=10, reps=500, delta=0.05)
    assert res["coverage"] >= 0.95
    per = v.mc_coverage(n=100, m=1, reps=500, delta=0.05, scheme="per_example")
    assert per["coverage"] >= 0.95
    # 100 own draws (one per example) leave less slack than 10 shared draws
    assert per["mean_slack"] < res["mean_slack"]
    with pytest.raises(ValueError, match="scheme"):
        v.mc_coverage(scheme="mixed")


def test_ledger_union_holds_and_uncorrected_fails():
    res = v.ledger_demo(n=100, k=200, p=0.3, reps=4000, delta=0.05)["results"]
    assert res["union (delta/K each)"]["violation_rate"] <= 0.05
    assert res["no correction (delta each)"]["ci_low"] > 0.05


def test_tv_lower_bound_covers():
    df = v.tv_coverage(settings=[("mean 1.0", 1, 1.0, 1.0, 300), ("sd 2.0", 1, 0.0, 2.0, 300)], reps=8)
    assert (df["lower_coverage"] == 1.0).all()
    assert (df["estimate_bias"].abs() < 0.08).all()


def test_irt_recovery_table():
    df = v.irt_recovery(subjects=(200,), missing=(0.0, 0.5), items=40)
    assert (df["spearman"] > 0.9).all()


def test_kl_bound_covers_the_mean_of_independent_non_identical_losses():
    # The per-example MC scheme: n independent losses with *different* means p_i. Known truth
    # μ = mean(p_i); the kl upper bound at δ must fail at most a fraction δ of the time.
    import numpy as np

    from pacbayes_sft.bounds import mc_risk_upper

    rng = np.random.default_rng(0)
    n, reps, delta = 40, 20000, 0.1
    p = rng.beta(0.5, 2.0, size=n)
    draws = rng.random((reps, n)) < p  # Bernoulli(p_i), the worst case of [0, 1] losses
    upper = mc_risk_upper(draws.mean(axis=1), n, delta)
    fail = float(np.mean(upper < p.mean()))
    assert fail <= delta / 2  # the union with the lower tail (ln(2/δ)) leaves slack; observed ≈ 0.01


def test_race_answers_are_right_at_the_level_by_either_method():
    """Races on buckets with known means and slices that trade their order, every round stratified:
    at level 0.8 (so a broken interval would show within 40 races) the wrong-answer rate is not
    significantly above 0.2, and the confidence sequence decides the clear gap on fewer items."""
    df = v.race_coverage(reps=40, level=0.8, max_items=6000)
    assert len(df) == 3 * len(v.RACE_SCENARIOS) and "just beyond ε" in v.RACE_SCENARIOS
    assert (df["ci_low"] <= 0.2).all(), df
    clear = df[df["scenario"] == "clear gap"].set_index("confidence")
    assert clear.loc["betting", "decided"] == 1.0 and clear.loc["betting", "mean_items"] < clear.loc["bernstein", "mean_items"]
    assert clear.loc["cmeb", "decided"] == 1.0 and clear.loc["cmeb", "mean_items"] < clear.loc["betting", "mean_items"]
