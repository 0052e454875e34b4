"""Target risk by reweighting a labelled pool: simulations with known truth, the overlap warning, bad input."""

import numpy as np
import pytest
from scipy.optimize import minimize

from pacbayes_sft.estimators.target_risk import (
    DensityRatioWeights,
    SliceWeights,
    _confusion,
    _overlap,
    effective_sample_size,
    simplex_least_squares,
)

WORDS = "apple banana cherry dog egg fig grape house ice jam kite lemon".split()
P_ERR = np.linspace(0.1, 0.8, 8)  # true error of each slice (op 1..8)
SKEWED = np.arange(1, 9) / 36.0  # a target weighted toward hard ops


def _prompt(rng, op: int) -> str:
    parts = [f"{rng.choice(WORDS)} = {rng.integers(1, 20)} ." for _ in range(op)]
    return " ".join(parts) + f" what is {rng.choice(WORDS)} ?"


def _sample(rng, n: int, shares: np.ndarray):
    drawn = rng.choice(np.arange(1, 9), size=n, p=shares)
    return [_prompt(rng, int(o)) for o in drawn], drawn


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    pool, pool_ops = _sample(rng, 800, np.full(8, 1 / 8))
    errors = (rng.random(800) < P_ERR[pool_ops - 1]).astype(float)
    target, target_ops = _sample(rng, 400, SKEWED)
    shares = np.bincount(target_ops, minlength=9)[1:] / len(target_ops)  # the target's realised shares
    return pool, pool_ops, errors, target, float(SKEWED @ P_ERR), shares


def test_effective_sample_size_closed_forms():
    assert effective_sample_size(np.ones(50)) == pytest.approx(50.0)
    assert effective_sample_size(np.r_[1.0, np.zeros(9)]) == pytest.approx(1.0)
    w = np.array([1.0, 2.0, 3.0])
    assert effective_sample_size(w) == pytest.approx(36.0 / 14.0)
    with pytest.raises(ValueError, match="weights"):
        effective_sample_size(np.array([1.0, -1.0]))


def test_simplex_least_squares_matches_a_constrained_solver():
    rng = np.random.default_rng(1)
    m = rng.random((4, 4)) + 2 * np.eye(4)
    m /= m.sum(axis=0)
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    assert simplex_least_squares(m, m @ pi) == pytest.approx(pi, abs=1e-6)
    mu = rng.dirichlet(np.ones(4))  # not exactly reachable: compare with SLSQP on the simplex
    ours = simplex_least_squares(m, mu)
    ref = minimize(
        lambda p: np.sum((m @ p - mu) ** 2), np.full(4, 0.25), method="SLSQP", bounds=[(0, 1)] * 4,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}], options={"ftol": 1e-14},
    ).x
    assert ours.sum() == pytest.approx(1.0) and np.all(ours >= 0)
    assert np.sum((m @ ours - mu) ** 2) <= np.sum((m @ ref - mu) ** 2) + 1e-8


def test_slice_weights_recover_the_target_shares_and_risk(world):
    pool, pool_ops, errors, target, truth, shares = world
    est = SliceWeights(features="structure").fit(pool, pool_ops, target)
    assert est.target_shares_ == pytest.approx(shares, abs=0.02)
    r = est.risk(errors, n_boot=300)
    # against the same pool reweighted with the target's true shares, the estimated shares cost little
    oracle = float(shares @ np.array([errors[pool_ops == k].mean() for k in range(1, 9)]))
    assert abs(r.estimate - oracle) < 0.015
    assert abs(errors.mean() - truth) > 0.08  # the unweighted pool is far off: the test can fail
    assert r.lower <= truth <= r.upper and not r.certified
    assert est.overlap_ok_ and r.details["overlap_ok"] == 1.0


def test_density_ratio_moves_the_pool_error_toward_the_target(world):
    pool, pool_ops, errors, target, _, shares = world
    est = DensityRatioWeights(features="structure").fit(pool, target)
    # the weights follow the slice ratio SKEWED / uniform: larger on hard ops
    by_op = np.array([est.weights_[pool_ops == k].mean() for k in range(1, 9)])
    assert np.all(np.diff(by_op) > 0)
    r = est.risk(errors, n_boot=300)
    oracle = float(shares @ np.array([errors[pool_ops == k].mean() for k in range(1, 9)]))
    assert abs(r.estimate - oracle) < 0.04 < abs(errors.mean() - oracle)
    assert r.lower < r.upper and 0 < r.details["ess_fraction"] <= 1


def test_a_target_outside_the_pool_support_raises_the_overlap_warning(world):
    pool, pool_ops, errors, _, _, _ = world
    rng = np.random.default_rng(5)
    far = [_prompt(rng, 12) for _ in range(200)]  # op 12 against an op 1-8 pool
    for est in (DensityRatioWeights(features="structure").fit(pool, far), SliceWeights(features="structure").fit(pool, pool_ops, far)):
        assert not est.overlap_ok_ and "outside the pool's support" in est.warning_
        r = est.risk(errors, n_boot=50)
        assert "WARNING, poor overlap" in r.assumptions and r.details["overlap_ok"] == 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p, s, e, t: SliceWeights().fit(p, np.ones(len(p)), t), "pool_slices.*at least 2 slices"),
        (lambda p, s, e, t: SliceWeights().fit(p, s[:-1], t), "pool_slices must hold one slice"),
        (lambda p, s, e, t: DensityRatioWeights().fit(p, ["", "  "]), "target_prompts: every prompt is empty"),
        (lambda p, s, e, t: DensityRatioWeights().fit(p, "one prompt"), "target_prompts must be a nonempty list"),
        (lambda p, s, e, t: DensityRatioWeights().risk(e), "not fitted"),
        (lambda p, s, e, t: DensityRatioWeights(features="structure").fit(p, t).risk(e[:-1]), "pool_errors must hold one error"),
        (lambda p, s, e, t: DensityRatioWeights(n_splits=1), "n_splits"),
        (lambda p, s, e, t: DensityRatioWeights().fit(p, t[:3]), "target_prompts must hold at least 10"),
        (lambda p, s, e, t: SliceWeights(max_residual=-1), "max_residual"),
    ],
)
def test_bad_input_names_the_argument(world, call, match):
    pool, pool_ops, errors, target, _, _ = world
    with pytest.raises(ValueError, match=match):
        call(pool, pool_ops, errors, target)


def test_the_confusion_matrix_is_p_of_prediction_given_slice():
    """M[i, j] = P(pred = i | truth = j): columns sum to 1, and an asymmetric case fixes the orientation."""
    truth = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1])  # slice 0 is read as 1 a quarter of the time; slice 1 never as 0
    m = _confusion(truth, pred, 2)
    assert m == pytest.approx(np.array([[0.75, 0.0], [0.25, 1.0]]))
    # a target that is all slice 1 predicts slice 1 always; all slice 0 predicts (0.75, 0.25)
    assert simplex_least_squares(m, np.array([0.0, 1.0])) == pytest.approx([0.0, 1.0], abs=1e-6)
    assert simplex_least_squares(m, np.array([0.75, 0.25])) == pytest.approx([1.0, 0.0], abs=1e-6)
    assert not np.allclose(simplex_least_squares(m.T, np.array([0.75, 0.25])), [1.0, 0.0], atol=1e-3)


def test_the_support_rule_does_not_move_with_the_sample_sizes():
    """Pool and target from one distribution: no warning, however unequal their sizes."""
    rng = np.random.default_rng(3)
    small, _ = _sample(rng, 100, np.full(8, 1 / 8))
    large, _ = _sample(rng, 1000, np.full(8, 1 / 8))
    for pool, target in ((small, large), (large, small)):
        est = DensityRatioWeights(features="structure").fit(pool, target)
        assert est.outside_share_ <= 0.02 and est.overlap_ok_, (len(pool), len(target), est.warning_)


def test_each_overlap_rule_can_raise_the_warning():
    from types import SimpleNamespace

    ok = dict(outside_share_=0.0, max_outside=0.05, support_threshold=0.95, ess_=90.0, min_ess_fraction=0.05)
    assert _overlap(SimpleNamespace(**ok), 100) == (True, "")
    for change, words in [
        ({"outside_share_": 0.2}, "outside the pool's support"),
        ({"ess_": 2.0}, "effective sample size is 2.0 of 100"),
        ({"residual_": 0.3, "max_residual": 0.1}, "not a mixture of the pool's"),
        ({"singular_": 0.01, "min_singular": 0.05}, "near-singular"),
    ]:
        good, text = _overlap(SimpleNamespace(**(ok | change)), 100)
        assert not good and words in text


def test_the_registered_pool_estimators_fall_back_to_doc_outside_the_support(world):
    """iw and iw_slices as label-free specs: the fitted weights' estimate inside the support; outside
    it DoC under the same name when the source confidences are given (and the warning alone otherwise)."""
    from pacbayes_sft.estimators.label_free import EstimatorSettings, LabelFreeInputs, label_free_estimates
    from pacbayes_sft.estimators.label_free.methods import DoC

    pool, pool_ops, errors, target, _, _ = world
    settings = EstimatorSettings(n_boot=50)
    pool_in = {"pool_prompts": pool, "pool_slices": pool_ops.tolist(), "pool_correct": (1 - errors).astype(int).tolist()}
    inside = {r.name: r for r in label_free_estimates(LabelFreeInputs(target_prompts=target, **pool_in), settings)}
    assert set(inside) == {"iw", "iw_slices"}
    direct = SliceWeights().fit(pool, pool_ops, target).risk(errors, n_boot=50)
    assert inside["iw_slices"].estimate == pytest.approx(direct.estimate)
    assert "fallback" not in inside["iw_slices"].details
    rng = np.random.default_rng(5)
    far = [_prompt(rng, 12) for _ in range(200)]  # op 12 against an op 1-8 pool
    alone = label_free_estimates(LabelFreeInputs(target_prompts=far, **pool_in), settings, names=["iw_slices"])[0]
    assert "WARNING, poor overlap" in alone.assumptions and alone.details["overlap_ok"] == 0.0
    conf = {"source_conf": rng.uniform(0.5, 1, 100), "source_correct": rng.integers(0, 2, 100), "target_conf": rng.uniform(0, 0.5, 200)}
    rows = label_free_estimates(LabelFreeInputs(target_prompts=far, **pool_in, **conf), settings, names=["iw", "iw_slices"])
    doc = DoC(n_boot=50).fit(conf["source_conf"], conf["source_correct"]).predict(conf["target_conf"])
    for r in rows:
        assert r.estimate == pytest.approx(doc.estimate) and r.details["fallback"] == 1.0
        assert "fell back to DoC" in r.assumptions and "outside the pool's support" in r.assumptions


def test_black_box_shift_estimation_corrects_a_noisy_slice_classifier():
    """Slices that a classifier confuses (a prompt of slice k carries, with probability 0.3, one filler
    statement that looks like the k real ones): the predicted shares are biased towards the pool's,
    and inverting the confusion matrix recovers the target's true shares (Lipton et al. 2018)."""
    rng = np.random.default_rng(7)

    def noisy(op: int) -> str:
        return _prompt(rng, op + int(rng.random() < 0.3))

    def draw(n: int, shares: np.ndarray):
        ops = rng.choice(np.arange(1, 5), size=n, p=shares)
        return [noisy(int(o)) for o in ops], ops

    pool, pool_ops = draw(2400, np.full(4, 0.25))
    truth = np.array([0.55, 0.25, 0.15, 0.05])
    target, target_ops = draw(2400, truth)
    realised = np.bincount(target_ops, minlength=5)[1:] / len(target_ops)
    est = SliceWeights(features="structure").fit(pool, pool_ops, target)
    assert est.confusion_.diagonal().min() < 0.8  # the classifier is noisy: the test has something to correct
    naive = np.abs(est.target_predicted_ - realised).sum()
    corrected = np.abs(est.target_shares_ - realised).sum()
    assert corrected < 0.08 and corrected < naive / 2, (corrected, naive)


def test_slice_bootstrap_counts_the_resamples_that_lose_a_slice(world):
    pool, pool_ops, errors, target, _, _ = world
    keep = np.r_[np.flatnonzero(pool_ops != 8), np.flatnonzero(pool_ops == 8)[:2]]  # op 8: two pool items
    est = SliceWeights(features="structure").fit([pool[i] for i in keep], pool_ops[keep], target)
    r = est.risk(errors[keep], n_boot=400)
    # P(both op-8 items missed in a resample) = (1 - 1/n)^(2n) ≈ e^-2 ≈ 0.135
    assert r.details["boot_lost_slice"] == pytest.approx(np.exp(-2), abs=0.05)
    assert "lost a slice of the pool" in r.assumptions
    full = SliceWeights(features="structure").fit(pool, pool_ops, target).risk(errors, n_boot=100)
    assert full.details["boot_lost_slice"] == 0.0 and "lost a slice" not in full.assumptions
