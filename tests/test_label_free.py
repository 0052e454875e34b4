"""Label-free estimators of the test risk: numbers against closed forms, brute-force enumerations
and simulations with known truth; coverage of their intervals; bad inputs."""

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest

from pacbayes_sft.bounds import (
    LabelFreeEstimate,
    PosteriorDraws,
    disagreement_form_2013,
    half_disagreement_lower,
    joint_error_form_2016,
    kl_inverse_lower,
    mc_risk_upper,
    proportion_interval,
)
from pacbayes_sft.bounds.domain_adaptation import per_item_disagreement, per_item_terms
from pacbayes_sft.estimators.label_free import (
    ATC,
    ESTIMATORS,
    DoC,
    EstimatorSettings,
    EstimatorSpec,
    LabelFreeInputs,
    atc_threshold,
    inputs_needed,
    label_free_estimates,
    register_estimator,
    seed_disagreement,
    unregister_estimator,
)
from pacbayes_sft.report.label_free import estimates_table, score_table
from pacbayes_sft.report.pages import _label_free_table
from pacbayes_sft.sweep.label_free import cell_estimates, cell_inputs
from pacbayes_sft.sweep.store import read_record

# ---------------------------------------------------------------- simulation helpers


def _draws(rng, probs, k=2):
    """k independent categorical draws per item from the rows of ``probs`` (n × classes)."""
    cum = probs.cumsum(axis=1)
    u = rng.uniform(size=(k, probs.shape[0], 1))
    return np.minimum((u > cum[None]).sum(axis=2), probs.shape[1] - 1)


def _labelled(rng, probs, labels, k=2):
    ans = _draws(rng, probs, k)
    return PosteriorDraws(ans.tolist(), (ans == labels[None]).astype(int).tolist())


def _population(probs, labels):
    """Exact Gibbs risk R, joint error e and disagreement d of per-item categorical posteriors."""
    p_right = probs[np.arange(len(labels)), labels]
    return (1 - p_right).mean(), ((1 - p_right) ** 2).mean(), (1 - (probs**2).sum(axis=1)).mean()


# ---------------------------------------------------------------- proportion intervals


@pytest.mark.parametrize("k,n,delta", [(0, 20, 0.05), (7, 20, 0.05), (20, 20, 0.1), (130, 400, 0.01)])
def test_binary_interval_is_clopper_pearson(k, n, delta):
    mean, lo, hi = proportion_interval([1] * k + [0] * (n - k), delta)
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - delta, method="exact")
    assert mean == k / n and lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_bounded_interval_is_the_kl_inverse_and_covers():
    v = np.array([0, 0.5, 1, 0.5, 0.5, 0, 1, 0.5])
    mean, lo, hi = proportion_interval(v, 0.05)
    assert hi == pytest.approx(mc_risk_upper(mean, v.size, 0.05))  # kl⁻¹(mean, ln(2/δ)/n)
    assert lo == pytest.approx(kl_inverse_lower(mean, math.log(2 / 0.05) / v.size)) and lo < mean
    rng, hits = np.random.default_rng(0), 0
    for _ in range(400):  # values in {0, ½, 1} with mean 0.3: coverage at least 90 %
        x = rng.choice([0.0, 0.5, 1.0], p=[0.55, 0.3, 0.15], size=60)
        _, a, b = proportion_interval(x, 0.1)
        hits += a <= 0.3 <= b
    assert hits / 400 >= 0.9


# ---------------------------------------------------------------- binary vs multiclass identities


def test_binary_posteriors_have_risk_equal_to_joint_error_plus_half_disagreement():
    rng = np.random.default_rng(1)
    p1 = rng.uniform(size=500)
    probs, labels = np.stack([1 - p1, p1], axis=1), rng.integers(0, 2, 500)
    for k in (2, 3, 5):
        t = per_item_terms(_labelled(rng, probs, labels, k))
        np.testing.assert_allclose(t["risk"], t["joint_error"] + 0.5 * t["disagreement"], atol=1e-12)


def test_multiclass_risk_lies_between_half_disagreement_and_joint_error_plus_half_disagreement():
    rng = np.random.default_rng(2)
    probs, labels = rng.dirichlet(np.ones(8) * 0.5, size=800), rng.integers(0, 8, 800)
    t = per_item_terms(_labelled(rng, probs, labels, 4))
    upper = t["joint_error"] + 0.5 * t["disagreement"]
    assert (t["risk"] <= upper + 1e-12).all() and (0.5 * t["disagreement"] <= t["risk"] + 1e-12).all()
    assert (t["risk"] < upper - 1e-9).any()  # two wrong draws disagree somewhere: equality fails


def _enumerate(points, hypotheses, labels):
    """Every (x, h, h') triple of a uniform point multiset and a uniform posterior over ``hypotheses``
    as a 2-draw sample: its sample means are the population values exactly."""
    xs, a, b = zip(*[(x, h[x], g[x]) for x in points for h in hypotheses for g in hypotheses])
    correct = [[int(v == labels[x]) for v, x in zip(col, xs)] for col in (a, b)]
    return PosteriorDraws([list(a), list(b)], correct)


def _brute(points, hypotheses, labels):
    trip = [(h[x], g[x], labels[x]) for x in points for h in hypotheses for g in hypotheses]
    r = np.mean([u != y for u, _, y in trip])
    e = np.mean([u != y and v != y for u, v, y in trip])
    d = np.mean([u != v for u, v, _ in trip])
    return r, e, d


def test_domain_adaptation_forms_on_tiny_enumerations():
    """Four prompts, three answers and 'no answer' (None), posteriors uniform over small sets of
    answer tables; source and target are point multisets. Checked for every choice: the sample
    terms equal the brute-force population values, the 2013 form holds with λ = |ẽ_T − ẽ_S|, the
    2016 form holds with the true β_∞ = max T/S, and ½d ≤ R ≤ e + ½d."""
    labels = [0, 1, 2, 0]
    tables = list(itertools.product([0, 1, 2, None], repeat=4))
    rng = np.random.default_rng(3)
    for _ in range(150):
        hyps = [tables[i] for i in rng.choice(len(tables), size=3)]
        src = list(rng.choice(4, size=4))
        tgt = [x for x in rng.choice(4, size=3) if x in src] or src[:1]  # target inside source support
        r_s, e_s, d_s = _brute(src, hyps, labels)
        r_t, e_t, d_t = _brute(tgt, hyps, labels)
        det = disagreement_form_2013(_enumerate(src, hyps, labels), _enumerate(tgt, hyps, labels))
        assert det.details["source_risk"] == pytest.approx(r_s)
        assert det.details["source_disagreement"] == pytest.approx(d_s)
        assert det.details["target_disagreement"] == pytest.approx(d_t)
        lam = abs((r_t - d_t / 2) - (r_s - d_s / 2))
        assert r_t <= r_s + 0.5 * abs(d_t - d_s) + lam + 1e-12
        assert 0.5 * d_t <= r_t + 1e-12 and r_t <= e_t + 0.5 * d_t + 1e-12
        ratio = max((tgt.count(x) / len(tgt)) / (src.count(x) / len(src)) for x in set(tgt))
        f16 = joint_error_form_2016(_enumerate(src, hyps, labels), _enumerate(tgt, hyps, labels), beta=ratio)
        assert f16.details["source_joint_error"] == pytest.approx(e_s)
        assert r_t <= 0.5 * d_t + ratio * e_s + 1e-12  # the 2016 form with the true β_∞, η = 0
        assert f16.estimate == pytest.approx(min(1.0, 0.5 * d_t + ratio * e_s))


def test_the_binary_lambda_fails_for_multiclass_answers():
    """With λ = |e_T − e_S| (the binary papers' term) the 2013 form can fail once two wrong draws
    may disagree: here R_T = 2/3 > R_S + ½|d_T − d_S| + |e_T − e_S| = 1/2 + 0 + 1/12."""
    labels, hyps = [0, 1, 2, 0], [(2, 1, None, None), (2, 1, 1, 0)]
    (r_s, e_s, d_s), (r_t, e_t, d_t) = _brute([1, 3, 2], hyps, labels), _brute([0, 3, 3], hyps, labels)
    assert (r_s, e_s, d_s, r_t, e_t, d_t) == pytest.approx((1 / 2, 5 / 12, 1 / 3, 2 / 3, 1 / 2, 1 / 3))
    assert r_t > r_s + 0.5 * abs(d_t - d_s) + abs(e_t - e_s)
    assert r_t <= r_s + 0.5 * abs(d_t - d_s) + abs((r_t - d_t / 2) - (r_s - d_s / 2))


# ---------------------------------------------------------------- the forms on simulations with known truth


def _domain_sim(rng, n=400):
    """Binary posteriors: source items p ~ Beta(2, 5) of answering 1 (label 0), target ~ Beta(3, 3)."""
    ps, pt = rng.beta(2, 5, size=n), rng.beta(3, 3, size=n)
    src = _labelled(rng, np.stack([1 - ps, ps], 1), np.zeros(n, int))
    tgt = _labelled(rng, np.stack([1 - pt, pt], 1), np.zeros(n, int))
    return src, PosteriorDraws(tgt.answers)


def test_disagreement_forms_cover_their_population_values():
    # Population values by numerical integration over the Beta item laws (binary: R = e + ½d).
    r_s, e_s, d_s = (
        beta_dist(2, 5).mean(),
        beta_dist(2, 5).moment(2),
        2 * (beta_dist(2, 5).mean() - beta_dist(2, 5).moment(2)),
    )
    r_t, e_t, d_t = (
        beta_dist(3, 3).mean(),
        beta_dist(3, 3).moment(2),
        2 * (beta_dist(3, 3).mean() - beta_dist(3, 3).moment(2)),
    )
    target_2013 = r_s + 0.5 * abs(d_t - d_s)
    rng, hits, lower_ok, est_2013 = np.random.default_rng(4), {"2013": 0, "2016": 0}, 0, []
    for _ in range(200):
        src, tgt = _domain_sim(rng)
        a = disagreement_form_2013(src, tgt, delta=0.1)
        hits["2013"] += a.lower <= target_2013 <= a.upper
        est_2013.append(a.estimate)
        b = joint_error_form_2016(src, tgt, beta=(r_t - 0.5 * d_t) / e_s, delta=0.1)  # β with e_T = β e_S
        hits["2016"] += b.lower <= r_t <= b.upper
        lower_ok += half_disagreement_lower(tgt, delta=0.1).lower <= 0.5 * d_t  # ≤ ½d_T ≤ R_T
    assert hits["2013"] / 200 >= 0.9 and hits["2016"] / 200 >= 0.9 and lower_ok / 200 >= 0.9
    assert np.mean(est_2013) == pytest.approx(target_2013, abs=0.01)
    assert e_t == pytest.approx(r_t - 0.5 * d_t)


def test_half_disagreement_is_certified_and_the_others_are_not():
    rng = np.random.default_rng(5)
    src, tgt = _domain_sim(rng, 100)
    low = half_disagreement_lower(tgt)
    assert low.certified and low.upper == 1.0 and low.lower <= low.estimate
    d = per_item_disagreement(tgt)
    assert low.estimate == pytest.approx(d.mean() / 2)
    k, n = int(d.sum()), d.size  # one-sided Clopper–Pearson at δ = the two-sided interval at 2δ
    assert low.lower == pytest.approx(0.5 * binomtest(k, n).proportion_ci(0.9, method="exact").low)
    assert not disagreement_form_2013(src, tgt).certified and not joint_error_form_2016(src, tgt).certified


def test_the_2013_form_widens_with_the_disagreement_gap_and_its_signed_variant_follows_it():
    src = PosteriorDraws([["1"] * 50, ["1"] * 40 + ["2"] * 10], [[1] * 50, [1] * 40 + [0] * 10])
    ests = []
    for m in (0, 10, 25, 50):
        tgt = PosteriorDraws([["1"] * 50, ["1"] * (50 - m) + ["3"] * m])
        ests.append(disagreement_form_2013(src, tgt))
        signed = disagreement_form_2013(src, tgt, signed=True)
        assert signed.estimate == pytest.approx(0.1 + 0.5 * (m / 50 - 0.2))
    assert [e.estimate for e in ests] == pytest.approx([0.1 + 0.5 * abs(m / 50 - 0.2) for m in (0, 10, 25, 50)])


# ---------------------------------------------------------------- Jiang et al.: seed disagreement


def test_seed_disagreement_matches_error_for_calibrated_runs():
    """Runs drawn independently from per-item class probabilities that are also the label law (a
    class-wise calibrated ensemble): E[error] = E[disagreement] = E[1 − Σ p_k²]."""
    rng = np.random.default_rng(6)
    a = np.ones(5) * 0.7
    truth = 1 - (a[0] * (a[0] + 1) / (a.sum() * (a.sum() + 1))) * 5  # E Σ p_k² under Dirichlet(a)
    ests, errs, hits = [], [], 0
    for _ in range(150):
        probs = rng.dirichlet(a, size=300)
        labels = _draws(rng, probs, 1)[0]
        runs = _draws(rng, probs, 3)
        r = seed_disagreement(runs.tolist(), n_boot=300, random_state=1, level=0.9)
        ests.append(r.estimate)
        errs.append((runs != labels[None]).mean())
        hits += r.lower <= truth <= r.upper
    assert np.mean(ests) == pytest.approx(truth, abs=0.01) and np.mean(errs) == pytest.approx(truth, abs=0.01)
    assert hits / 150 >= 0.82  # a 90 % bootstrap interval, with margin


def test_seed_disagreement_averages_the_pairs():
    runs = [["1", "2", "3", None], ["1", "2", "4", None], ["5", "2", "3", "1"]]
    est = seed_disagreement(runs).estimate
    pair = lambda u, v: np.mean([x != y for x, y in zip(u, v)])  # noqa: E731
    assert est == pytest.approx(np.mean([pair(runs[0], runs[1]), pair(runs[0], runs[2]), pair(runs[1], runs[2])]))
    assert seed_disagreement([[1, 2, 3], ["1", "2", "3"]]).estimate == 0.0  # ints and strings compare as text


# ---------------------------------------------------------------- ATC and DoC


def test_atc_threshold_fits_the_source_error_exactly_with_ties():
    for conf in ([0.5] * 6, [0.2, 0.5, 0.5, 0.5, 0.9, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
        c = np.array(conf)
        for wrong in itertools.product([0, 1], repeat=6):  # brute force over every correctness pattern
            w_ = np.array(wrong)
            t, w = atc_threshold(c[None], w_[None])
            assert (c < t[0]).sum() + w[0] * (c == t[0]).sum() == pytest.approx(w_.sum())
            assert 0 <= w[0] < 1


def test_atc_is_exact_under_a_confidence_step_and_covers():
    """correct ⇔ c ≥ τ on both sides; confidences Beta(4, 2) on the source, Beta(2, 2) on the target."""
    tau, truth = 0.55, beta_dist(2, 2).cdf(0.55)
    rng, ests, hits = np.random.default_rng(7), [], 0
    for _ in range(150):
        sc, tc = rng.beta(4, 2, 300), rng.beta(2, 2, 300)
        r = ATC(level=0.9, n_boot=300, random_state=2).fit(sc, (sc >= tau).astype(int)).predict(tc)
        ests.append(r.estimate)
        hits += r.lower <= truth <= r.upper
    assert np.mean(ests) == pytest.approx(truth, abs=0.01) and hits / 150 >= 0.82


def test_doc_is_unbiased_under_calibration_and_covers():
    truth = beta_dist(2, 3).mean()  # error = 1 − E c with c ~ Beta(3, 2) on the target
    rng, ests, hits = np.random.default_rng(8), [], 0
    for _ in range(150):
        sc, tc = rng.beta(5, 2, 300), rng.beta(3, 2, 300)
        r = DoC(level=0.9, n_boot=300, random_state=3).fit(sc, (rng.uniform(size=300) < sc).astype(int)).predict(tc)
        ests.append(r.estimate)
        hits += r.lower <= truth <= r.upper
    assert np.mean(ests) == pytest.approx(truth, abs=0.01) and hits / 150 >= 0.82


def test_confidence_estimators_are_monotone_and_doc_shifts_by_the_confidence_gap():
    rng = np.random.default_rng(9)
    sc = rng.uniform(0.2, 0.8, 200)
    y = (rng.uniform(size=200) < sc).astype(int)
    tc = rng.uniform(0.2, 0.7, 150)
    atc, doc = ATC().fit(sc, y), DoC().fit(sc, y)
    assert (sc < atc.threshold_).mean() == pytest.approx(1 - y.mean()) == atc.source_error_
    prev = 1.0
    for shift in (0.0, 0.05, 0.1, 0.2):
        est = atc.predict(tc + shift).estimate
        assert est <= prev
        prev = est
    assert doc.predict(tc).estimate - doc.predict(tc + 0.1).estimate == pytest.approx(0.1)
    assert doc.predict(tc).estimate == pytest.approx((1 - y.mean()) + sc.mean() - tc.mean())


def test_bootstrap_intervals_are_seeded():
    rng = np.random.default_rng(10)
    sc, tc = rng.uniform(size=100), rng.uniform(size=80)
    y = (sc > 0.4).astype(int)
    for cls in (ATC, DoC):
        a, b = cls(random_state=5).fit(sc, y).predict(tc), cls(random_state=5).fit(sc, y).predict(tc)
        assert (a.lower, a.upper) == (b.lower, b.upper)
    c = DoC(random_state=6).fit(sc, y).predict(tc)
    assert (a.lower, a.upper) != (c.lower, c.upper) and a.estimate == c.estimate


# ---------------------------------------------------------------- the combined table


def test_label_free_estimates_picks_what_its_inputs_allow():
    rng = np.random.default_rng(11)
    src, tgt = _domain_sim(rng, 60)
    sc = rng.uniform(size=60)
    y = (sc > 0.3).astype(int)
    sa, ta = rng.uniform(size=60), rng.uniform(size=60)
    full = LabelFreeInputs(
        target_conf=rng.uniform(size=60), source_conf=sc, source_correct=y, source_draws=src, target_draws=tgt,
        seed_answers=tgt.answers, tv=(0.2, 0.1), source_answer_conf=sa, target_answer_conf=ta,
    )  # fmt: skip
    rows = label_free_estimates(full, EstimatorSettings(n_boot=50))
    assert [r.name for r in rows] == [n for n in ESTIMATORS if n not in ("iw", "iw_slices")]  # no pool given
    by = {r.name: r for r in rows}
    assert by["atc_answer"].estimate == ATC(n_boot=50).fit(sa, y).predict(ta).estimate
    assert by["doc_answer"].estimate == DoC(n_boot=50).fit(sa, y).predict(ta).estimate
    assert "final answer tokens" in by["doc_answer"].assumptions
    assert by["da_2013"] == disagreement_form_2013(src, tgt)
    assert by["two_gap_tv"].estimate == pytest.approx(1 - y.mean() + 0.2)
    assert by["no_shift"].estimate == pytest.approx(1 - y.mean())
    assert by["gde_posterior"].estimate == by["seed_disagreement"].estimate
    only = label_free_estimates(LabelFreeInputs(target_draws=tgt), EstimatorSettings(n_boot=50))
    assert [r.name for r in only] == ["half_disagreement", "gde_posterior"]
    assert all(isinstance(r, LabelFreeEstimate) and 0 <= r.lower <= r.upper <= 1 for r in rows)


# ---------------------------------------------------------------- the registry: a toy estimator plugs in

STUDY = Path(__file__).resolve().parent.parent / "docs" / "results" / "label_free_study"


def _toy_fn(inputs, settings):
    """1 − mean confidence: the error when the confidence is calibrated (a toy, not in the package)."""
    e = 1.0 - float(np.mean(inputs.target_conf))
    return LabelFreeEstimate("toy_conf", e, e, e, settings.level, False, "calibrated confidence", {})


def _toy_slices(inputs, settings):
    """The source error with every slice weighted equally (reads the pool's prompts and slices)."""
    slices, wrong = np.asarray(inputs.source_slices), 1 - np.asarray(inputs.source_correct)
    e = float(np.mean([wrong[slices == s].mean() for s in np.unique(slices)]))
    details = {"n_source": float(len(inputs.source_prompts)), "n_target": float(len(inputs.target_prompts))}
    return LabelFreeEstimate("toy_slices", e, e, e, settings.level, False, "equal slice shares", details)


@pytest.fixture
def toy():
    spec = register_estimator(EstimatorSpec("toy_conf", {"target_conf"}, "adapter", _toy_fn, "1 - mean confidence"))
    yield spec
    unregister_estimator("toy_conf")


@pytest.fixture
def toy_slices():
    needs = {"source_correct", "source_prompts", "source_slices", "target_prompts"}
    spec = register_estimator(EstimatorSpec("toy_slices", needs, "adapter", _toy_slices, "equal slice shares"))
    yield spec
    unregister_estimator("toy_slices")


def test_a_registered_spec_runs_wherever_its_inputs_are_given(toy):
    assert ESTIMATORS["toy_conf"] is toy and toy.needs == frozenset({"target_conf"})
    (row,) = label_free_estimates(LabelFreeInputs(target_conf=[0.2, 0.6]))
    assert row.name == "toy_conf" and row.estimate == pytest.approx(0.6) and row.level == pytest.approx(0.95)
    both = label_free_estimates(LabelFreeInputs(target_conf=[0.5], source_correct=[1, 0, 0, 1]))
    assert [r.name for r in both] == ["no_shift", "toy_conf"]
    assert inputs_needed(["atc", "toy_conf"]) == {"source_conf", "source_correct", "target_conf"}
    with pytest.raises(ValueError, match="'toy_conf' needs target_conf"):
        label_free_estimates(LabelFreeInputs(source_correct=[1]), names=["toy_conf"])


def test_after_unregistering_a_spec_is_gone():
    register_estimator(EstimatorSpec("toy_gone", {"target_conf"}, "adapter", _toy_fn, "x"))
    assert unregister_estimator("toy_gone").name == "toy_gone"
    assert "toy_gone" not in ESTIMATORS
    assert [r.name for r in label_free_estimates(LabelFreeInputs(target_conf=[0.5]))] == []


def test_a_registered_spec_shows_up_in_a_sweep_cells_estimates(toy, toy_slices):
    rec = read_record(sorted((STUDY / "cells").glob("*__s0.json"))[-1])
    conf = rec.label_free["test"]["confidence"]
    rows = {r["name"]: r for r in cell_estimates(rec, [rec, rec], items=range(10), n_boot=50)}
    assert rows["toy_conf"]["estimate"] == pytest.approx(1 - np.mean(conf[:10]))
    assert "toy_slices" not in rows  # the record holds no prompts: those come from the task
    # the pool's prompts and slices, from the task's examples (stand-ins here, one slice per parity)
    n_src, n_test = len(rec.label_free["source"]["answer"]), len(conf)
    src = [SimpleNamespace(prompt=f"q{i}", op=i % 2) for i in range(n_src)]
    test = [SimpleNamespace(prompt=f"t{i}", op=1) for i in range(n_test)]
    rows = {r["name"]: r for r in cell_estimates(rec, items=range(10), examples={"source": src, "test": test}, n_boot=50)}
    wrong = 1 - np.asarray(rec.label_free["source"]["correct"])
    assert rows["toy_slices"]["estimate"] == pytest.approx((wrong[0::2].mean() + wrong[1::2].mean()) / 2)
    inputs = cell_inputs(rec, items=[3, 1], examples={"source": src, "test": test})
    assert inputs.target_prompts == ["t3", "t1"] and inputs.source_slices[:3] == [0, 1, 0]
    with pytest.raises(ValueError, match="examples: cell"):
        cell_inputs(rec, examples={"source": src[1:], "test": test})


def test_the_report_table_lists_a_registered_spec_and_keeps_the_committed_numbers(toy):
    """The committed study's uniform-mixture rows rebuild exactly from its records, and the toy
    spec gets rows, a two-gap total and a score line without any change to the report."""
    table = estimates_table(STUDY, mixtures=("uniform",), n_boot=300)
    keys = ["base", "objective", "n", "bucket", "seed", "mixture", "name"]
    committed = pd.read_csv(STUDY / "label_free_estimates.csv")
    committed = committed[committed["mixture"] == "uniform"]
    ours = table[~table["name"].isin(["toy_conf", "total:toy_conf"])].astype({"n": int, "seed": int})
    both = committed.merge(ours, on=keys, suffixes=("_c", "_n"))
    assert len(both) == len(committed) == len(ours)
    for col in ("estimate", "lower", "upper", "measured"):
        np.testing.assert_allclose(both[f"{col}_n"], both[f"{col}_c"], rtol=1e-12, atol=0, equal_nan=True)
    toy_rows = table[table["name"] == "toy_conf"]
    assert len(toy_rows) == len(committed[committed["name"] == "atc"]) == 64
    rec = read_record(STUDY / "cells" / "strong__sft__n128__op1-2__s0.json")
    mine = toy_rows[(toy_rows["base"] == "strong") & (toy_rows["objective"] == "sft") & (toy_rows["n"] == 128)]
    mine = mine[(mine["bucket"] == "op1-2") & (mine["seed"] == 0)]
    assert mine["estimate"].item() == pytest.approx(1 - np.mean(rec.label_free["test"]["confidence"]))
    assert (table["name"] == "total:toy_conf").sum() == 64
    scores = score_table(STUDY, table)
    line = scores[scores["estimator"] == "toy_conf"]
    assert line["mae"].item() == pytest.approx((toy_rows["estimate"] - toy_rows["measured"]).abs().mean())
    assert "toy_conf" in _label_free_table(scores)["estimator"].tolist()


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: per_item_disagreement(PosteriorDraws([["1", "2"]])), "draws.answers"),
        (lambda: per_item_disagreement(PosteriorDraws([["1", "2"], ["1"]])), "draws.answers"),
        (lambda: per_item_disagreement(PosteriorDraws([["1", 2.5], ["1", "2"]])), r"draws.answers\[0\]\[1\]"),
        (lambda: per_item_terms(PosteriorDraws([["1"], ["1"]])), "draws.correct"),
        (lambda: per_item_terms(PosteriorDraws([["1"], ["1"]], [[1], [2]])), r"draws.correct\[1\]"),
        (
            lambda: per_item_terms(PosteriorDraws([["1"], ["1"]], [[1], [0]], name="source")),
            "source.correct contradicts",
        ),
        (lambda: per_item_terms(PosteriorDraws([["1"], ["2"]], [[1], [1]])), "two different correct"),
        (lambda: per_item_terms(PosteriorDraws([[None], ["2"]], [[1], [0]])), "no answer"),
        (lambda: proportion_interval([0.2, 1.5], 0.05), "values"),
        (lambda: proportion_interval([0.2], 1.0), "delta"),
        (lambda: joint_error_form_2016(*_domain_sim(np.random.default_rng(0), 5), beta=0), "beta"),
        (lambda: joint_error_form_2016(*_domain_sim(np.random.default_rng(0), 5), q=1), "q must"),
        (lambda: ATC(level=1.5), "level"),
        (lambda: DoC(n_boot=1), "n_boot"),
        (lambda: ATC().predict([0.5]), "not fitted"),
        (lambda: ATC().fit([0.5, 0.6], [1]), "source_correct"),
        (lambda: DoC().fit([0.5, 1.6], [1, 0]), "source_conf"),
        (lambda: DoC().fit([0.5], [1]).predict([math.nan]), "target_conf"),
        (lambda: seed_disagreement([["1", "2"]]), "^answers must list"),
        (lambda: label_free_estimates(LabelFreeInputs(), names=["atc"]), "names: estimator 'atc' needs"),
        (lambda: label_free_estimates(LabelFreeInputs(), names=["nope"]), "names: unknown"),
        (lambda: label_free_estimates(LabelFreeInputs(), names="atc"), "names must be a list"),
        (lambda: EstimatorSettings(delta=0), "delta"),
        (lambda: EstimatorSettings(q=1.0), "q must"),
        (lambda: label_free_estimates(LabelFreeInputs(source_correct=[1]), {"delta": 0.1}), "settings must"),
        (lambda: EstimatorSpec("a b", {"target_conf"}, "adapter", _toy_fn, "x"), "name must"),
        (lambda: EstimatorSpec("x", {"labels"}, "adapter", _toy_fn, "x"), "needs: unknown inputs"),
        (lambda: EstimatorSpec("x", "target_conf", "adapter", _toy_fn, "x"), "needs must"),
        (lambda: EstimatorSpec("x", {"target_conf"}, "everyone", _toy_fn, "x"), "risk_of must"),
        (lambda: EstimatorSpec("x", {"target_conf"}, "adapter", None, "x"), "fn must"),
        (lambda: register_estimator(EstimatorSpec("atc", {"target_conf"}, "adapter", _toy_fn, "x")), "already"),
        (lambda: unregister_estimator("nope"), "no estimator 'nope'"),
        (lambda: label_free_estimates(LabelFreeInputs(source_correct=[1], tv=(2, 0))), "tv must"),
        (lambda: LabelFreeEstimate("x", 0.5, 0.6, 0.4, 0.95, False, ""), "lower must"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_atc_says_how_many_source_errors_its_threshold_rests_on():
    rng = np.random.default_rng(3)
    conf = rng.uniform(size=50)
    few = (np.arange(50) >= 2).astype(int)  # 2 errors
    r = ATC(n_boot=20).fit(conf, few).predict(rng.uniform(size=30))
    assert r.details["source_errors"] == 2.0 and "rests on 2 source error(s); WARNING" in r.assumptions
    many = (conf > 0.3).astype(int)
    r = ATC(n_boot=20).fit(conf, many).predict(rng.uniform(size=30))
    assert r.details["source_errors"] == float((1 - many).sum()) and "WARNING" not in r.assumptions


def test_each_mixture_is_scored_against_its_own_races_with_a_wilson_interval(tmp_path):
    """The uniform mixture reads the test-mixture races, the skewed one the `skewed` races; a race
    open at its cap decides nothing; the hit rate carries its 95% Wilson interval."""
    from pacbayes_sft.report.label_free import _race_answers, _race_columns

    (tmp_path / "race").mkdir()

    def race(name, mixture, answer, reason):
        doc = {"group": {"base": "b", "objective": "sft", "n": 8}, "settings": {"mixture": mixture}, "status": "done",
               "result": {"answer": answer, "reason": reason, "epsilon": 0.04, "level": 0.95,
                          "items_used": dict.fromkeys(answer, 10), "rounds": 1}}  # fmt: skip
        (tmp_path / "race" / f"{name}.json").write_text(json.dumps(doc))

    race("b__sft__n8", None, ["easy"], "best")
    race("b__sft__n8@skewed", "skewed", ["hard", "medium"], "epsilon_tie")
    race("b__sft__n8@other", "other", ["easy"], "best")
    assert _race_answers(tmp_path) == {("uniform", "b", "sft", 8): ("easy",), ("skewed", "b", "sft", 8): ("hard", "medium")}
    race("b__sft__n8@skewed", "skewed", ["hard", "medium"], "cap")
    assert ("skewed", "b", "sft", 8) not in _race_answers(tmp_path)
    cols = _race_columns([True] * 9 + [False], [0.5] * 10)
    z = 1.959963984540054
    centre, half = (0.9 + z**2 / 20) / (1 + z**2 / 10), z / (1 + z**2 / 10) * np.sqrt(0.09 / 10 + z**2 / 400)
    assert cols["in_race_answer"] == 0.9 and cols["chance_in_race_answer"] == 0.5
    assert cols["in_race_answer_lo"] == pytest.approx(centre - half) and cols["in_race_answer_hi"] == pytest.approx(centre + half)
