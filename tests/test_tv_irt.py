"""TV proxies against exact TVs of known distributions, and IRT recovery from simulations."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.stats import norm, spearmanr

from pacbayes_sft.estimators import classifier_tv, fit_irt, histogram_tv, response_matrix
from pacbayes_sft.estimators.features import exact_gaussian_tv


def _var_shift_tv(s):
    # independent of the library's closed form: numerical integration of ½∫|p − q|
    from scipy.integrate import quad

    return 0.5 * quad(lambda x: abs(norm.pdf(x) - norm.pdf(x, scale=s)), -40, 40, points=[-2, 0, 2], limit=200)[0]


def test_exact_gaussian_tvs_match_numerical_integration():
    from scipy.integrate import quad

    from pacbayes_sft.estimators.tv_reference import exact_gaussian_scale_tv

    for mu in (0.3, 1.0, 2.5):
        num = 0.5 * quad(lambda x, mu=mu: abs(norm.pdf(x) - norm.pdf(x, loc=mu)), -40, 40, points=[mu / 2])[0]
        assert exact_gaussian_tv(mu) == pytest.approx(num, abs=1e-9)
    for sd in (0.5, 2.0, 3.0):
        assert exact_gaussian_scale_tv(sd) == pytest.approx(_var_shift_tv(sd), abs=1e-7)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_classifier_tv_mean_shift(mu):
    rng = np.random.default_rng(int(mu * 10))
    r = classifier_tv(rng.normal(size=(2000, 1)), rng.normal(mu, 1, size=(2000, 1)), n_threads=1, n_permutations=200)
    exact = exact_gaussian_tv(mu)
    assert abs(r.estimate - exact) < 0.04
    assert r.lower <= exact
    assert r.p_value < 0.01


def test_classifier_tv_variance_shift_multivariate():
    rng = np.random.default_rng(1)
    r = classifier_tv(rng.normal(size=(3000, 1)), rng.normal(0, 2, size=(3000, 1)), n_threads=1, n_permutations=200)
    exact = _var_shift_tv(2.0)
    assert abs(r.estimate - exact) < 0.05 and r.lower <= exact
    # In 3-D with the shift on one axis only, TV is the same; extra noise dimensions cost little.
    p = rng.normal(size=(3000, 3))
    q = rng.normal(size=(3000, 3))
    q[:, 0] += 1.0
    r3 = classifier_tv(p, q, n_threads=1, n_permutations=200)
    assert abs(r3.estimate - exact_gaussian_tv(1.0)) < 0.04 and r3.lower <= exact_gaussian_tv(1.0)


def test_classifier_tv_equal_distributions_large_p_value():
    ps, ests = [], []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        r = classifier_tv(
            rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2)), n_threads=1, n_permutations=300, random_state=seed
        )
        ps.append(r.p_value)
        ests.append(r.estimate)
        assert r.lower == 0.0
    assert np.median(ps) > 0.1
    assert max(ests) < 0.06


def test_classifier_tv_unequal_sizes_unbiased():
    rng = np.random.default_rng(2)
    r = classifier_tv(rng.normal(size=(400, 1)), rng.normal(1, 1, size=(4000, 1)), n_threads=1, n_permutations=100)
    assert abs(r.estimate - exact_gaussian_tv(1.0)) < 0.05
    assert r.n_p == 400 and r.n_q == 4000


def test_classifier_tv_texts_and_bad_inputs():
    p = [f"a b c {i % 3}" for i in range(60)]
    q = [f"x y z {i % 3}" for i in range(60)]
    r = classifier_tv(p, q, n_threads=1, n_permutations=50)
    assert r.estimate > 0.9 and "proxy" in r.kind
    rs = classifier_tv(p, q, features="structure", n_threads=1, n_permutations=0)
    assert rs.p_value == 1.0
    with pytest.raises(ValueError, match="same number of features"):
        classifier_tv(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="finite"):
        classifier_tv(np.full((10, 1), np.nan), np.zeros((10, 1)))
    with pytest.raises(ValueError, match="n_splits"):
        classifier_tv(np.zeros((3, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="delta"):
        classifier_tv(np.zeros((10, 1)), np.ones((10, 1)), delta=1.5)
    with pytest.raises(ValueError, match="both be texts"):
        classifier_tv(["a"] * 10, np.zeros((10, 1)))


def test_histogram_tv_exact():
    assert histogram_tv([1, 1, 2, 3], [1, 2, 2, 2]) == pytest.approx(0.5 * (0.25 + 0.5 + 0.25))
    assert histogram_tv(["a"], ["b"]) == 1.0
    assert histogram_tv(np.array([1, 2]), [2, 1]) == 0.0


def _simulate(model, J=300, K=60, seed=0, adversarial=True, missing=0.0):
    rng = np.random.default_rng(seed)
    th, b = rng.normal(size=J), rng.normal(size=K)
    a = np.exp(rng.normal(0, 0.3, K)) if model == "2pl" else np.ones(K)
    P = 1 / (1 + np.exp(-a * (th[:, None] - b[None, :])))
    Y = (rng.random((J, K)) < P).astype(float)
    if adversarial:  # strong subjects mostly answer hard items, weak ones easy items
        rs = np.argsort(np.argsort(th)) / J
        ri = np.argsort(np.argsort(b)) / K
        keep = rng.random((J, K)) < np.where(np.abs(rs[:, None] - ri[None, :]) < 0.3, 0.9, 0.05)
        Y = np.where(keep, Y, np.nan)
    if missing:
        Y = np.where(rng.random((J, K)) < missing, np.nan, Y)
    return Y, th, b, a


@pytest.mark.parametrize("model", ["2pl", "1pl"])
def test_irt_recovers_difficulty_where_proportion_correct_fails(model):
    Y, th, b, a = _simulate(model)
    pc_rho = spearmanr(-np.nanmean(Y, axis=0), b)[0]
    res = fit_irt(Y, model=model)
    rho = spearmanr(res.difficulty, b)[0]
    assert rho >= 0.93
    assert rho > pc_rho + 0.1  # proportion correct ranks items wrongly in this design
    assert spearmanr(res.ability, th)[0] > 0.8
    if model == "2pl":
        assert spearmanr(res.discrimination, a)[0] > 0.3


def test_irt_long_table_heldout_auc_and_errors():
    Y, *_ = _simulate("2pl", J=150, K=30, adversarial=False, missing=0.2)
    j, k = np.nonzero(~np.isnan(Y))
    long = pd.DataFrame({"subject": j, "item": k, "correct": Y[j, k]})
    r_long, r_wide = fit_irt(long), fit_irt(Y)
    np.testing.assert_allclose(r_long.difficulty, r_wide.difficulty, rtol=1e-4, atol=1e-4)
    r = fit_irt(Y, heldout_fraction=0.2)
    assert r.heldout_auc is not None and r.heldout_auc > 0.7
    with pytest.raises(ValueError, match="only 0, 1"):
        fit_irt(np.array([[0, 2.0]]))
    with pytest.raises(ValueError, match="model"):
        fit_irt(Y, model="3pl")
    with pytest.raises(ValueError, match="no observed"):
        fit_irt(np.full((2, 2), np.nan))


def test_response_matrix_from_models():
    m = response_matrix({"sft_n100": {"q1": 1, "q2": 0}, "dft_n100": {"q1": 1}})
    assert m.shape == (2, 2) and np.isnan(m.loc["dft_n100", "q2"])


@pytest.mark.parametrize("two_pl", [False, True])
def test_irt_gradient_matches_finite_differences(two_pl):
    from pacbayes_sft.estimators.irt import IRTObjective

    rng = np.random.default_rng(3)
    J, K, n_obs = 7, 5, 60
    s, i = rng.integers(0, J, n_obs), rng.integers(0, K, n_obs)
    y = rng.integers(0, 2, n_obs).astype(float)
    obj = IRTObjective(s, i, y, J, K, two_pl, prior_b=2.0, prior_log_a=0.7)
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=J + K + (K if two_pl else 0))
        err = check_grad(lambda v: obj(v)[0], lambda v: obj(v)[1], x)
        assert err < 1e-5 * max(1.0, np.linalg.norm(obj(x)[1]))
    # and a deliberately wrong gradient is caught by the same check
    x = np.zeros(J + K + (K if two_pl else 0))
    assert check_grad(lambda v: obj(v)[0], lambda v: 1.01 * obj(v)[1] + 0.1, x) > 1e-3


def test_per_fold_lower_bound_against_its_definition_and_coverage():
    from pacbayes_sft.estimators.classifier_tv import clopper_pearson, per_fold_lower_bound

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    fold_of = rng.integers(0, 3, 600)
    pred = np.where(y == 1, rng.random(600) < 0.8, rng.random(600) < 0.3)
    want = max(
        clopper_pearson(int(pred[(fold_of == f) & (y == 1)].sum()), int(((fold_of == f) & (y == 1)).sum()), 0.05 / 6)[0]
        - clopper_pearson(int(pred[(fold_of == f) & (y == 0)].sum()), int(((fold_of == f) & (y == 0)).sum()), 0.05 / 6)[
            1
        ]
        for f in range(3)
    )
    assert per_fold_lower_bound(pred, y, fold_of, 3, 0.05) == pytest.approx(max(0.0, want))
    # coverage: with a fixed classifier of known TPR − FPR = 0.5, the bound stays below 0.5
    misses = 0
    for rep in range(300):
        r = np.random.default_rng(rep)
        pred = np.where(y == 1, r.random(600) < 0.8, r.random(600) < 0.3)
        misses += per_fold_lower_bound(pred, y, r.integers(0, 5, 600), 5, 0.1) > 0.5
    assert misses / 300 <= 0.1


def _igsm_texts(n, ops, seed, split):
    from pacbayes_sft.data import generate

    return [p.prompt + " " + p.response for p in generate(n, ops, split=split, seed=seed)]


def test_default_tv_proxy_sees_difficulty_on_igsm():
    """Known truth: a 2-op training bucket against the uniform op 1-8 test mixture has op-marginal
    TV 0.75 (ops are identifiable from the text, so the true TV is at least that); the default
    proxy reaches >= 90% of it at 512 per side, and reads ~0 for two samples of one distribution."""
    train = _igsm_texts(512, [3, 4], seed=1, split="train")
    test = _igsm_texts(512, [1, 2, 3, 4, 5, 6, 7, 8], seed=2, split="test")
    exact_op_tv = 0.5 * (2 * abs(0.5 - 1 / 8) + 6 * (1 / 8))
    r = classifier_tv(train, test, n_permutations=0, n_threads=1)
    assert r.estimate >= 0.9 * exact_op_tv, r
    same = [
        classifier_tv(
            _igsm_texts(512, [1, 2, 3, 4], seed=a, split="train"),
            _igsm_texts(512, [1, 2, 3, 4], seed=a + 1, split="train"),
            n_permutations=0,
            n_threads=1,
        ).estimate
        for a in (3, 5, 7)
    ]
    # one standard error of TPR - FPR at 512 per side is ~0.03
    assert np.mean(same) < 0.05 and max(same) < 0.12, same


def test_items_rated_by_the_sweep_models_and_the_cross_difficulty_map():
    """rate_items on a simulated (subject, item) table recovers item order; cross_difficulty
    averages per bucket and IRT bin."""
    import pandas as pd
    from scipy.stats import spearmanr

    from pacbayes_sft.report.item_difficulty import cross_difficulty, irt_bins, rate_items

    rng = np.random.default_rng(1)
    b = np.linspace(-2, 2, 40)
    rows = []
    for s in range(60):
        a = rng.normal(0, 1.2)
        bucket = ["easy", "hard"][s % 2]
        for i, bi in enumerate(b):
            ok = rng.random() < 1 / (1 + np.exp(-(a - bi)))
            rows.append(
                {"subject": f"m{s}", "item": f"{i // 10 + 1}#{i}", "slice": str(i // 10 + 1), "correct": float(ok)}
                | {"base": "b", "objective": "sft", "n": 8, "bucket": bucket, "seed": s}
            )
    responses = pd.DataFrame(rows)
    items = rate_items(responses)
    order = [int(it.split("#")[1]) for it in items["item"]]
    assert spearmanr(items["difficulty"], b[order])[0] > 0.9
    assert sorted(irt_bins(items, 4).value_counts().tolist()) == [10, 10, 10, 10]
    cross = cross_difficulty(responses, items, 4)
    acc = cross.pivot(index="bucket", columns="irt_bin", values="accuracy")
    assert (acc[1] > acc[4]).all()  # easier bins are answered more often
    direct = responses.merge(items.assign(irt_bin=irt_bins(items, 4))[["item", "irt_bin"]], on="item")
    ref = direct[(direct.bucket == "easy") & (direct.irt_bin == 2)].groupby("seed")["correct"].mean().mean()
    assert acc.loc["easy", 2] == pytest.approx(ref)


def test_irt_bins_keep_ties_together_and_number_bins_consecutively():
    import pandas as pd

    from pacbayes_sft.report.item_difficulty import irt_bins

    d = pd.DataFrame({"difficulty": [-3.0] * 6 + [0.1, 0.5, 1.0, 2.0]})  # 60% tied at the easy end
    b = irt_bins(d, 4)
    assert b.iloc[:6].nunique() == 1 and b.min() == 1  # the tie is one bin, and it is bin 1
    assert sorted(b.unique()) == list(range(1, b.max() + 1))
    assert (b.diff().dropna() >= 0).all()  # bins follow the difficulty


def test_irt_map_uses_the_largest_budget_whose_every_bucket_finished():
    from pacbayes_sft.report.item_difficulty import largest_full_budget

    rows = [
        {"base": "b", "objective": o, "n": n, "bucket": k, "irt_bin": 1, "accuracy": 0.5}
        for o, cells in (
            ("sft", [(32, "e"), (32, "h"), (64, "e"), (64, "h")]),
            ("dft", [(32, "e"), (32, "h"), (64, "e")]),
        )
        for n, k in cells
    ]
    kept = largest_full_budget(pd.DataFrame(rows), ["e", "h"])
    assert dict(kept.groupby("objective")["n"].unique().map(list)) == {"dft": [32], "sft": [64]}
    assert len(kept) == 4  # two buckets each; dft's n = 64 has only one bucket, so it is not drawn
