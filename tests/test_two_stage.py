"""The two-stage certificate with a data-dependent prior: σ_p rule, closed-form KL, and the sweep
cell it produces (bound on the part the prior never saw; the reported model is the posterior mean)."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from pacbayes_sft.certify.config import PriorConfig
from pacbayes_sft.certify.two_stage import choose_prior_sigma
from pacbayes_sft.posteriors import LearnedGaussianLoRA, learned_kl
from pacbayes_sft.sweep import load_config, normalise_config, run_sweep
from pacbayes_sft.sweep.runner import certify_cell
from pacbayes_sft.sweep.store import folder_config
from pacbayes_sft.training.models import attach_lora, tiny_causal_lm

QUICK = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "quick.yaml"


class _FakeLosses:
    """Losses whose MC risk at σ is a known step function: what the rule must read."""

    n = 10

    def __init__(self, risk_at):
        self.risk_at = risk_at

    def point(self, model):
        return 0.1


def _record_calls(monkeypatch) -> list:
    import pacbayes_sft.certify.two_stage as ts

    calls = []

    def fake_stochastic(model, losses, sigma, space, seed):
        calls.append(sigma)
        return type("R", (), {"mean": losses.risk_at(sigma)})()

    monkeypatch.setattr(ts, "stochastic_risk", fake_stochastic)
    return calls


def test_prior_sigma_ascending_is_the_largest_candidate_before_the_first_failure(monkeypatch):
    calls = _record_calls(monkeypatch)
    prior = PriorConfig(sigma_multiples=[0.5, 0.01, 0.1, 1.0, 0.2], tolerance=0.02, search="ascending")
    # risk rises past the tolerance at 0.2 and falls again at 1.0: the rule stops at the first failure
    risks = {0.01: 0.1, 0.1: 0.11, 0.2: 0.5, 0.5: 0.1, 1.0: 0.1}
    got = choose_prior_sigma(None, _FakeLosses(lambda s: risks[round(s / 2, 6)]), prior, 2.0)
    assert got.multiple == 0.1 and got.sigma == pytest.approx(0.2)
    assert [round(c / 2, 6) for c in calls] == [0.01, 0.1, 0.2]  # larger σ are never evaluated
    none_pass = choose_prior_sigma(None, _FakeLosses(lambda s: 0.9), prior, 2.0)
    assert none_pass.multiple == 0.01 and "none did" in none_pass.rule


def test_prior_sigma_descending_is_the_largest_candidate_that_passes(monkeypatch):
    calls = _record_calls(monkeypatch)
    prior = PriorConfig(sigma_multiples=[0.5, 0.01, 0.1, 1.0, 0.2], tolerance=0.02)
    assert prior.search == "descending"
    # passes at 1.0 (the largest): one evaluation, whatever the smaller candidates would give
    risks = {0.01: 0.1, 0.1: 0.11, 0.2: 0.5, 0.5: 0.1, 1.0: 0.12}
    got = choose_prior_sigma(None, _FakeLosses(lambda s: risks[round(s / 2, 6)]), prior, 2.0)
    assert got.multiple == 1.0 and [round(c / 2, 6) for c in calls] == [1.0]
    # 1.0 loses 0.021 > tolerance, 0.5 passes: stops there; the point risk is the fake's 0.1
    calls.clear()
    risks[1.0] = 0.121
    got = choose_prior_sigma(None, _FakeLosses(lambda s: risks[round(s / 2, 6)]), prior, 2.0)
    assert got.multiple == 0.5 and got.sigma == pytest.approx(1.0)
    assert [round(c / 2, 6) for c in calls] == [1.0, 0.5] and [r["multiple"] for r in got.rows] == [1.0, 0.5]
    none_pass = choose_prior_sigma(None, _FakeLosses(lambda s: 0.9), prior, 2.0)
    assert none_pass.multiple == 0.01 and "none did" in none_pass.rule and len(none_pass.rows) == 5


def test_prior_config_bad_inputs():
    for kw, name in (({"fraction": 1.0}, "fraction"), ({"kind": "x"}, "kind"), ({"select": 0}, "select"),
                     ({"sigma_multiples": []}, "sigma_multiples"), ({"epochs": 0}, "epochs"),
                     ({"search": "up"}, "search")):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            PriorConfig(**kw)
    assert PriorConfig().split(2) == 1 and PriorConfig(fraction=0.9).split(10) == 9
    with pytest.raises(ValueError, match="n >= 2"):
        PriorConfig().split(1)


def test_learned_kl_equals_the_trained_objective_kl():
    """The KL rebuilt from two adapters and the scales equals the differentiable KL the objective
    trained (independent code paths), and the brute-force per-coordinate sum."""
    prior = attach_lora(tiny_causal_lm("gpt2", seed=1), r=2, alpha=4.0, seed=2)
    post_model = attach_lora(tiny_causal_lm("gpt2", seed=1), r=2, alpha=4.0, seed=2)
    centre = {k: v.detach().clone() for k, v in _factor_state(prior).items()}
    post = LearnedGaussianLoRA(post_model, prior_sigma=0.03, init_scale=0.7, centre=centre)
    with torch.no_grad():
        for i, mu in enumerate(post.means()):
            mu.add_(0.01 * (i + 1))
        for j, rho in enumerate(post.rho.values()):
            rho.add_(0.1 * j)
    want = float(post.kl().detach())
    scales = post.module_scales()
    post.remove()
    got = learned_kl(post_model, prior, scales, 0.03)
    assert got == pytest.approx(want, rel=1e-6)  # the objective sums in float32 where this sums in float64
    brute = 0.0
    q = {n: p for n, p in post_model.named_parameters() if "lora_" in n}
    p0 = {n: p for n, p in prior.named_parameters() if "lora_" in n}
    for name, w in q.items():
        s = next(v for k, v in scales.items() if name.startswith(k + "."))
        for a, b in zip(w.detach().double().flatten().tolist(), p0[name].detach().double().flatten().tolist()):
            brute += math.log(0.03 / s) + (s**2 + (a - b) ** 2) / (2 * 0.03**2) - 0.5
    assert got == pytest.approx(brute, rel=1e-10)


def _factor_state(model):
    from pacbayes_sft.adapters import init_state_from_factors, lora_factors

    return init_state_from_factors(lora_factors(model))


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_stage")
    cfg = yaml.safe_load(QUICK.read_text())
    cfg |= {"budgets": [16], "buckets": {"easy": [1], "hard": [3]}, "objectives": ["sft"]}
    cfg["prior"] = {"sigma_multiples": [0.01, 0.1, 1.0], "select": 6}
    run_sweep(normalise_config(cfg), out, progress=False)
    return out


def test_a_two_stage_cell_bounds_on_the_rest_and_reports_the_posterior_mean(two_stage_run):
    out = two_stage_run
    rec = json.loads((out / "cells" / "tiny__sft__n16__easy__s0.json").read_text())
    adapter = out / "adapters" / "tiny__sft__n16__easy__s0"
    state = json.loads((adapter / "posterior.json").read_text())
    assert (adapter / "prior" / "adapter_config.json").is_file() and state["n_prior"] == 8
    assert state["sigma_p"] == pytest.approx(state["sigma_choice"]["sigma"])
    terms = rec["terms"]
    assert terms["kl"] == pytest.approx(state["kl"]) and terms["kl"] >= 0
    assert rec["sigma_grid"][0]["mc_losses"] == 8  # one draw for each of the 8 examples the prior never saw
    assert "data-dependent prior" in json.dumps(rec["ledger"])
    # the saved adapter is the posterior mean: recomputing its certificate gives the record's terms
    cert = certify_cell(out, "tiny__sft__n16__easy__s0")
    assert cert.n == 8 and cert.prior["kind"] == "data-dependent"
    assert cert.kl.value_nats == pytest.approx(terms["kl"], rel=1e-6)
    assert cert.empirical_risk.point == pytest.approx(terms["point_train_risk"])
    assert cert.two_gap.total == pytest.approx(terms["total"], rel=1e-6)


def test_folders_from_before_the_prior_section_read_as_data_free(two_stage_run, tmp_path):
    meta = json.loads((two_stage_run / "sweep.json").read_text())
    meta["config"].pop("prior")
    (tmp_path / "sweep.json").write_text(json.dumps(meta))
    cfg, _ = folder_config(tmp_path)
    assert cfg.prior.kind == "pretrained"
    assert load_config(QUICK).prior.kind == "two_stage"  # while a config file without it gets the new default


def test_the_old_prior_kind_name_reads_as_two_stage_and_keeps_the_folder_hash(two_stage_run):
    """ "data" (the kind's name before "two_stage") still reads, and a config saying either hashes
    the same as the run folders written under the old name."""
    from pacbayes_sft.sweep.config import config_hash

    meta = json.loads((two_stage_run / "sweep.json").read_text())
    old = meta["config"] | {"prior": meta["config"]["prior"] | {"kind": "data"}}
    new = meta["config"] | {"prior": meta["config"]["prior"] | {"kind": "two_stage"}}
    assert normalise_config(old).prior.kind == normalise_config(new).prior.kind == "two_stage"
    assert config_hash(normalise_config(old)) == config_hash(normalise_config(new))
    with pytest.raises(ValueError, match=r"prior\.kind"):
        normalise_config(meta["config"] | {"prior": {"kind": "grid"}})  # a sweep trains its own priors
    with pytest.raises(ValueError, match=r"prior\.kind"):
        PriorConfig(kind="learned")


def test_a_cell_stores_what_the_label_free_estimates_need(two_stage_run):
    """Per test item the point answer, confidence and two draws' answers; per held-out source item
    the same with correctness; every estimator then runs from the record alone, on any subset."""
    from pacbayes_sft.sweep.label_free import cell_estimates, measured_risk
    from pacbayes_sft.sweep.store import read_record

    rec = read_record(two_stage_run / "cells" / "tiny__sft__n16__easy__s0.json")
    test, source = rec.label_free["test"], rec.label_free["source"]
    assert len(test["answer"]) == len(rec.items["answer_correct"]) == len(test["answer_1"])
    assert len(source["correct"]) == 12 and all(0 <= c <= 1 for c in test["confidence"])
    rows = {r["name"]: r for r in cell_estimates(rec, [rec, rec])}
    assert {"no_shift", "two_gap_tv", "atc", "doc", "da_2013", "da_2016", "seed_disagreement"} <= set(rows)
    assert rows["seed_disagreement"]["estimate"] == 0.0  # one run twice never disagrees with itself
    for r in rows.values():
        assert 0.0 <= r["lower"] <= r["estimate"] <= r["upper"] <= 1.0, r["name"]
    assert rows["half_disagreement"]["certified"] and not rows["atc"]["certified"]
    sub = {r["name"]: r for r in cell_estimates(rec, items=[0, 1, 2])}
    assert sub["no_shift"]["estimate"] == rows["no_shift"]["estimate"]  # the source does not change
    assert measured_risk(rec, [0, 1, 2]) == pytest.approx(1 - sum(rec.items["answer_correct"][:3]) / 3)


def test_label_free_scores_of_a_run(two_stage_run):
    """Every estimator is scored against the measured risk on both test mixtures."""
    from pacbayes_sft.report.label_free import estimates_table, mixture_items, score_table

    assert mixture_items([1, 1, 1, 1, 5, 5, 6, 1], "skewed") == [0, 4, 5, 6]  # a quarter of op 1, all of ops 5-6
    with pytest.raises(ValueError, match="mixture"):
        mixture_items([1], "hard")
    table = estimates_table(two_stage_run, n_boot=100)
    assert set(table["mixture"]) == {"uniform", "skewed"} and {"atc", "total:tv", "total:atc"} <= set(table["name"])
    assert table["measured"].between(0, 1).all() and table["estimate"].between(0, 1).all()
    scores = score_table(two_stage_run, table)
    assert set(scores["mixture"]) == {"uniform", "skewed"}
    assert scores["mae"].between(0, 1).all() and scores["pick_in_set"].between(0, 1).all()
    # the chance rates: a random pick is in a set of k of K buckets with probability k/K, in all groups with their product
    assert scores["chance_in_set"].between(0, 1).all() and (scores["chance_all_in_set"] <= scores["chance_in_set"] + 1e-12).all()
    one = table[(table["mixture"] == "uniform") & (table["name"] == "no_shift")]
    assert scores.set_index(["mixture", "estimator"]).loc[("uniform", "no_shift"), "mae"] == pytest.approx(
        (one["estimate"] - one["measured"]).abs().mean()
    )


def test_the_report_of_a_two_stage_run_says_what_it_certifies(two_stage_run):
    from pacbayes_sft.report import build_report

    build_report(two_stage_run)
    md = (two_stage_run / "report.md").read_text()
    assert "the prior is an adapter trained on the first half of S" in md
    assert "pretrained weights as prior" not in md
    assert "## Label-free estimates of the test risk" in md and "total:tv" in md
    assert (two_stage_run / "label_free_scores.csv").is_file()


def test_the_prior_scale_is_chosen_on_its_own_noise_stream(monkeypatch):
    """σ_p's selection draws and the MC bound's draws come from different seeds: σ_p (and through it
    Q) must not depend on noise the bound's Monte-Carlo term reuses."""
    import pacbayes_sft.certify.two_stage as ts
    from pacbayes_sft.certify.config import BoundConfig, CertifySettings, EvalConfig, TVConfig

    seeds = {}

    def choose(model, losses, prior, rms, *, seed):
        seeds["selection"] = seed
        return ts.PriorSigma(0.1, 0.1, 1.0, [], "fixed")

    class _Post:
        def kl(self):
            return torch.tensor(1.0)

        def module_scales(self):
            return {}

        def remove(self):
            pass

    def certificate(model, losses, tv_inputs, bound, state, *, seed):
        seeds["mc_bound"] = seed
        return "certificate"

    monkeypatch.setattr(ts, "example_losses", lambda *a, **k: None)
    monkeypatch.setattr(ts, "prior_centre_rms", lambda *a, **k: 1.0)
    monkeypatch.setattr(ts, "choose_prior_sigma", choose)
    monkeypatch.setattr(ts, "refine_posterior", lambda *a, **k: (_Post(), [{"loss": 0.0}]))
    monkeypatch.setattr(ts, "posterior_certificate", certificate)
    model = torch.nn.Linear(1, 1)
    for seed in (0, 3):
        cert, _ = ts.certify_two_stage(
            model, None, list(range(8)), [], prior=PriorConfig(), bound=BoundConfig(), tv=TVConfig(),
            evaluation=EvalConfig(), settings=CertifySettings(seed=seed),
        )  # fmt: skip
        assert cert == "certificate" and seeds["mc_bound"] == seed
        assert seeds["selection"] != seeds["mc_bound"] and seeds["selection"] == ts.SELECT_SEED + seed
