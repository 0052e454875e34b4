"""certify() end to end on a tiny from-config model, through the API and the CLI."""

import json
import math
from contextlib import contextmanager

import pytest

from pacbayes_sft.bounds import kl_inverse_upper
from pacbayes_sft.certify import BoundConfig, CertifySettings, PriorConfig, TVConfig, certify
from pacbayes_sft.cli import main
from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.training.models import build_model, tiny_config
from pacbayes_sft.training.sft import SFTConfig, finetune


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cert")
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=32, layers=2, max_positions=256), seed=0)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    train = [p.to_dict() for p in generate(40, [3], split="train", seed=1)]
    test = [p.to_dict() for p in generate(40, [1, 5], split="test", seed=2)]
    finetune(
        str(root / "base"),
        tok,
        [e["prompt"] for e in train],
        [e["response"] for e in train],
        SFTConfig(max_steps=8, batch_size=8, progress=False),
        root / "adapter",
    )
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (root / name).write_text(
            "\n".join(
                json.dumps({"prompt": r["prompt"], "response": r["response"], "difficulty": r["op"]}) for r in rows
            )
        )
    return root, train, test


def test_certify_api(run):
    root, train, test = run
    bound, tv = _bound(m=3, sigmas=(1e-3, 1e-2)), TVConfig(permutations=50)
    tg, doc = certify(str(root / "base"), str(root / "adapter"), train, test, bound=bound, tv=tv)
    assert doc["n"] == 40 and tg.n == 40
    # default scheme: every training example gets m = 3 draws of its own -> 120 independent losses
    assert doc["empirical_risk"]["mc_scheme"] == "per_example" and doc["empirical_risk"]["mc_losses"] == 120
    assert doc["empirical_risk"]["mc_upper"] >= doc["empirical_risk"]["mc_mean"]
    # The total, recomputed independently: KL from the merged weights (W_merged − W_base, no LoRA
    # algebra), the Seeger bound by kl⁻¹ at the per-grid-point δ, plus the TV estimate.
    sigma, d_b = doc["sigma"]["value"], doc["delta"]["per_grid_point_bound"]
    kl = _kl_from_merged_weights(root, sigma)
    assert doc["kl"]["value_nats"] == pytest.approx(kl, rel=1e-6)
    seeger = kl_inverse_upper(doc["empirical_risk"]["mc_upper"], (kl + math.log(2 * math.sqrt(40) / d_b)) / 40)
    assert doc["total"] == pytest.approx(float(seeger) + doc["tv"]["estimate"], rel=1e-6)
    assert doc["certified"] is False and not tg.certified and doc["estimated_terms"]
    assert abs(doc["delta"]["ledger"]["spent"] - 0.05) < 1e-12
    assert doc["g_gen"]["seeger"] <= doc["g_gen"]["maurer"] + 1e-12
    assert doc["tv"]["lower"] <= doc["tv"]["estimate"] + 1e-12
    json.dumps(doc)
    # Same inputs and seed: a bit-identical document.
    _, doc_again = certify(str(root / "base"), str(root / "adapter"), train, test, bound=bound, tv=tv)
    assert json.dumps(doc, sort_keys=True) == json.dumps(doc_again, sort_keys=True)
    _tg2, doc2 = certify(
        str(root / "base"),
        str(root / "adapter"),
        train,
        test,
        bound=_bound(m=3, sigmas=(1e-3, 1e-2), sigma_rule="sharpness", space="lora", mc_scheme="shared"),
        tv=tv,
    )
    assert doc2["kl"]["space"] == "lora" and "sharpness" in doc2["sigma"]["rule"]
    assert doc2["empirical_risk"]["mc_losses"] == 3
    from pacbayes_sft.bounds import mc_risk_upper

    for r in doc["grid"]:  # each grid row's bound rests on the 120 losses
        assert r["mc_risk_upper"] == pytest.approx(mc_risk_upper(r["mc_mean_risk"], 120, r["delta_mc"]))
    with pytest.raises(ValueError, match="mc_scheme"):
        _bound(mc_scheme="both")
    with pytest.raises(ValueError, match="m must"):
        _bound(m=0)
    with pytest.raises(ValueError, match="bound must be a BoundConfig"):
        certify(str(root / "base"), str(root / "adapter"), train, test, bound={"m": 3})
    with pytest.raises(ValueError, match="evaluation must be an EvalConfig"):
        certify(str(root / "base"), str(root / "adapter"), train, test, evaluation=64)


def _bound(**kw):
    """The bound of these tests: token error (a tiny random model's generations are not worth scoring)."""
    return BoundConfig(loss="token_error", **kw)


def _kl_from_merged_weights(root, sigma):
    from peft import PeftModel

    from pacbayes_sft.training.models import load_causal_lm

    base = {k: v.double() for k, v in load_causal_lm(root / "base").state_dict().items()}
    merged = PeftModel.from_pretrained(load_causal_lm(root / "base"), str(root / "adapter")).merge_and_unload()
    sq = sum(float(((v.double() - base[k]) ** 2).sum()) for k, v in merged.state_dict().items())
    return sq / (2 * sigma**2)


def test_certified_tv_makes_a_certified_certificate(run):
    """What is certified follows from the terms: the same engine with a certified TV gives a
    certified total; with a proxy TV it does not."""
    from pacbayes_sft.certify import certificate_core, plan_delta, teacher_forced_losses
    from pacbayes_sft.certify.certificate import TVTerm
    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.estimators import lora_kl
    from pacbayes_sft.training.models import load_causal_lm

    root, train, _ = run
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_causal_lm(root / "base"), str(root / "adapter")).eval()
    cfg = _bound(sigmas=[1e-2, 3e-2], m=1)
    losses = teacher_forced_losses(
        load_tokenizer(root / "base"), [e["prompt"] for e in train], [e["response"] for e in train], cfg.loss
    )
    for certified in (True, False):
        tv = TVTerm.plain(0.25, 40, 40, "exact TV" if certified else "a proxy", certified=certified)
        cert = certificate_core(model, losses, tv, cfg, plan_delta(cfg, 40, tv_interval=False))
        assert cert.certified is certified and bool(cert.estimated_terms) is (not certified)
        assert ("NOT a certified bound" in cert.statement()) is (not certified)
        assert cert.g_ext == pytest.approx(0.25)
        assert cert.kl.value_nats == pytest.approx(lora_kl(model, cert.sigma.value))


def test_certify_cli(run, capsys):
    root, _, _ = run
    out = root / "cert.json"
    argv = [
        "certify",
        "--base",
        str(root / "base"),
        "--adapter",
        str(root / "adapter"),
        "--train",
        str(root / "train.jsonl"),
        "--test",
        str(root / "test.jsonl"),
        "--out",
        str(out),
        "--m",
        "2",
        "--tv-permutations",
        "20",
        "--sigmas",
        "0.001,0.01",
        "--loss",
        "token_error",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "NOT certified" in text and "G_gen Seeger" in text
    assert json.loads(out.read_text())["n"] == 40


def test_certify_errors(run, tmp_path, capsys):
    root, train, test = run
    tok = igsm_tokenizer()
    other = build_model(tiny_config("llama", len(tok), hidden=48, layers=2, max_positions=256), seed=0)
    other.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="does not fit base"):
        certify(str(tmp_path / "other"), str(root / "adapter"), train, test, bound=_bound(m=2))
    with pytest.raises(ValueError, match="adapter_config"):
        certify(str(root / "base"), str(tmp_path), train, test, bound=_bound(m=2))
    with pytest.raises(ValueError, match="loss"):
        BoundConfig(loss="nll")
    with pytest.raises(ValueError, match="train_examples"):
        certify(str(root / "base"), str(root / "adapter"), [], test)
    no_answer = [{"prompt": e["prompt"], "response": e["response"]} for e in train]
    with pytest.raises(ValueError, match="needs an 'answer'"):  # answer_error (the default) with a scorer
        certify(
            str(root / "base"), str(root / "adapter"), no_answer, test, settings=CertifySettings(judge="final_answer")
        )
    with pytest.raises(ValueError, match="judge must be"):
        certify(str(root / "base"), str(root / "adapter"), train, test, settings=CertifySettings(judge=3))
    with pytest.raises(ValueError, match="settings must be a CertifySettings"):
        certify(str(root / "base"), str(root / "adapter"), train, test, settings={"seed": 1})
    capsys.readouterr()
    assert (
        main(
            [
                "certify",
                "--base",
                str(root / "base"),
                "--adapter",
                str(root / "adapter"),
                "--train",
                str(tmp_path / "missing.jsonl"),
                "--test",
                str(root / "test.jsonl"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--train" in err and len(err.splitlines()) == 1


def test_ties_in_the_bound_go_to_the_largest_sigma():
    import pandas as pd

    from pacbayes_sft.certify.engine import choose_sigma

    cfg = BoundConfig(sigmas=[1e-3, 1e-2, 3e-2])
    saturated = pd.DataFrame({"sigma": cfg.sigmas, "seeger": [1.0, 1.0, 1.0], "mc_mean_risk": [0.1] * 3})
    i, rule = choose_sigma(saturated, cfg, 0.1)
    assert saturated["sigma"][i] == 3e-2 and "ties" in rule
    clear = saturated.assign(seeger=[0.5, 0.7, 1.0])
    assert choose_sigma(clear, cfg, 0.1)[0] == 0


def test_relative_sigma_grid_is_a_multiple_of_the_adapted_weights_rms(run):
    import torch
    from peft import PeftModel

    from pacbayes_sft.certify.engine import sigma_grid
    from pacbayes_sft.training.models import load_causal_lm

    root, _, _ = run
    model = PeftModel.from_pretrained(load_causal_lm(root / "base"), str(root / "adapter"))
    targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    base = load_causal_lm(root / "base")
    ws = [m.weight.detach().double() for n, m in base.named_modules() if n.split(".")[-1] in targets]
    rms = float(torch.sqrt(sum((w**2).sum() for w in ws) / sum(w.numel() for w in ws)))  # brute force
    grid, got = sigma_grid(BoundConfig(sigma_multiples=[0.1, 1.0]), model)
    assert got == pytest.approx(rms, rel=1e-12) and grid == pytest.approx([0.1 * rms, rms])
    assert sigma_grid(BoundConfig(sigmas=[0.5]), model) == ([0.5], None)  # an absolute grid is used as given
    grid_lora, rms_lora = sigma_grid(BoundConfig(space="lora"), str(root / "adapter"))
    assert rms_lora > 0 and len(grid_lora) == 7


def test_stratified_cap_keeps_every_slice_and_is_not_a_prefix():
    from collections import Counter

    from pacbayes_sft.certify.tv_term import capped

    texts = [f"op{op} #{i}" for op in range(1, 9) for i in range(40)]  # sorted by op, as a test set is
    ops = [op for op in range(1, 9) for _ in range(40)]
    got = capped(texts, ops, 160, seed=0)
    assert len(got) == 160 and Counter(t.split()[0] for t in got) == {f"op{k}": 20 for k in range(1, 9)}
    assert got != texts[:160]
    assert capped(texts, ops, None, 0) == texts and capped(texts[:10], None, 50, 0) == texts[:10]


class _NoNoise:
    """Stands in for the Gaussian posterior: the 'draws' come from the loss function itself."""

    def __init__(self, model, sigma, space, seed=0):
        self.model, self.sigma, self.space = model, sigma, space

    @contextmanager
    def sample(self, index):
        yield self.model


def test_stochastic_risk_interval_covers_the_truth(monkeypatch):
    """Per-example losses that are Bernoulli(0.3) under the draws: the 90% interval covers 0.3."""
    import numpy as np

    import pacbayes_sft.certify.stochastic as smod
    from pacbayes_sft.certify import Losses

    monkeypatch.setattr(smod, "GaussianPosterior", _NoNoise)
    misses = 0
    for rep in range(60):
        draws = np.random.default_rng(rep).random(400) < 0.3
        losses = Losses(n=400, risk=lambda m: 0.3, example=lambda m, i, d=draws: float(d[i]))
        st = smod.stochastic_risk(object(), losses, 0.1, "delta", delta=0.1)
        assert st.lower <= st.mean <= st.upper and st.n == 400
        misses += not (st.lower <= 0.3 <= st.upper)
    assert misses <= 12  # 10% nominal over 60 repetitions, with binomial slack


def test_data_dependent_prior_certificate_and_ledger(run):
    root, train, test = run
    prior_dir = root / "prior_adapter"
    if not prior_dir.is_dir():
        finetune(
            str(root / "base"),
            igsm_tokenizer(),
            [e["prompt"] for e in train[:16]],
            [e["response"] for e in train[:16]],
            SFTConfig(max_steps=4, batch_size=8, progress=False, seed=1),
            prior_dir,
        )
    cert = certify(
        str(root / "base"),
        str(root / "adapter"),
        train,
        test,
        bound=_bound(m=1, sigmas=[1e-2, 3e-2]),
        tv=TVConfig(permutations=20),
        prior=PriorConfig(kind="grid", adapter=str(prior_dir), n_prior=16),
    )
    assert cert.n == 24 and cert.empirical_risk.mc_losses == 24  # the bound uses only the 24 unseen examples
    assert cert.prior["kind"] == "data-dependent" and cert.prior["n_prior"] == 16
    pac = [e["term"] for e in cert.delta.ledger["entries"] if e["term"].startswith("pac_bayes")]
    assert "prior: adapter trained on the first 16 examples, bound on the other 24" in pac[0]
    from pacbayes_sft.estimators import lora_kl

    assert cert.kl.value_nats == pytest.approx(lora_kl(str(root / "adapter"), cert.sigma.value, prior=str(prior_dir)))
    plain = certify(
        str(root / "base"),
        str(root / "adapter"),
        train,
        test,
        bound=_bound(m=1, sigmas=[1e-2, 3e-2]),
        tv=TVConfig(permutations=20),
    )
    assert plain.prior["kind"] == "data-free" and plain.n == 40
    with pytest.raises(ValueError, match="n_prior"):
        PriorConfig(kind="grid", adapter=str(prior_dir), n_prior=0)
    with pytest.raises(ValueError, match="n_prior"):
        certify(
            str(root / "base"), str(root / "adapter"), train, test,
            prior=PriorConfig(kind="grid", adapter=str(prior_dir), n_prior=40),
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"prior\.adapter"):
        certify(str(root / "base"), str(root / "adapter"), train, test, prior=PriorConfig(kind="grid"))
    with pytest.raises(ValueError, match="prior must be a PriorConfig"):
        certify(str(root / "base"), str(root / "adapter"), train, test, prior=str(prior_dir))
    # the default share of S: "fraction" (one half) trains the prior when n_prior is not given
    assert PriorConfig(kind="grid", adapter=str(prior_dir)).split(40) == 20


def test_per_module_kl_against_a_brute_force_sum(run):
    import torch

    from pacbayes_sft.adapters import lora_factors
    from pacbayes_sft.estimators import lora_kl
    from pacbayes_sft.posteriors import module_family

    root, _, _ = run
    factors = lora_factors(str(root / "adapter"))
    per_family = {
        "q_proj": 0.01,
        "k_proj": 0.02,
        "v_proj": 0.03,
        "o_proj": 0.04,
        "gate_proj": 0.05,
        "up_proj": 0.06,
        "down_proj": 0.07,
    }
    smap = {f.name: per_family[module_family(f.name)] for f in factors}
    brute = sum(
        float(((f.scaling * f.B.double() @ f.A.double()) ** 2).sum()) / (2 * smap[f.name] ** 2) for f in factors
    )
    assert lora_kl(str(root / "adapter"), smap) == pytest.approx(brute, rel=1e-10)
    assert torch.isfinite(torch.tensor(brute))


def test_per_module_sigma_search_and_its_ledger(run):
    root, train, test = run
    cert = certify(
        str(root / "base"),
        str(root / "adapter"),
        train,
        test,
        bound=_bound(m=1, sigma_multiples=[0.3, 1.0], per_module_sigma=True),
        tv=TVConfig(permutations=0),
    )
    families = 7  # q, k, v, o, gate, up, down
    pac = next(e for e in cert.delta.ledger["entries"] if e["term"].startswith("pac_bayes"))
    mc = next(e for e in cert.delta.ledger["entries"] if e["term"].startswith("mc_sampling"))
    assert f"K={2 + 2**families}" in pac["term"] and f"{2 + families * 2} sigma settings" in mc["term"]
    assert cert.delta.per_grid_point_bound == pytest.approx(pac["delta"] / (2 + 2**families))
    assert len(cert.grid) == 2 + families * 2 and "coordinate search" in cert.sigma.rule
    iso_best = min(r["seeger"] for r in cert.grid[:2])
    assert cert.empirical_risk.mc_upper + cert.g_gen.seeger <= iso_best + 1e-12  # never worse than isotropic
    if cert.sigma.per_family is not None:
        assert len(cert.sigma.per_family) == families
    with pytest.raises(ValueError, match="relative grid"):
        _bound(sigmas=[0.1], per_module_sigma=True)


class _PointMass:
    """A toy posterior family member: the point mass at the model (every draw is the model itself),
    with a KL fixed by the test, counting its draws."""

    def __init__(self, model, sigma, per_row):
        self.model, self.sigma, self.space, self.per_row = model, float(sigma), "toy point mass", per_row
        self.draws = []

    @contextmanager
    def sample(self, index):
        self.draws.append(index)
        yield self.model

    @contextmanager
    def sample_rows(self, indices):
        if not self.per_row:
            raise TypeError("one draw per batch")
        self.draws.extend(indices)
        yield self.model

    def kl(self, prior):
        return 3.0


def _peft(root):
    from pacbayes_sft.adapters import attach_adapter
    from pacbayes_sft.training.models import load_causal_lm

    return attach_adapter(load_causal_lm(root / "base"), root / "adapter")


@pytest.mark.parametrize("per_row", [True, False])
def test_certify_takes_a_posterior_family(run, per_row):
    """certify(..., family=) evaluates exactly the family's grid, draws and KL: with a point mass
    the sampled risk is the point risk, the KL is the family's, and the δ plan pays for K = 1."""
    from pacbayes_sft.certify import example_losses
    from pacbayes_sft.posteriors import Posterior, PosteriorFamily, Prior

    root, train, test = run
    model = _peft(root)
    made = []

    def posterior(sigma, seed):
        made.append(_PointMass(model, sigma, per_row))
        return made[-1]

    family = PosteriorFamily("toy point mass", [0.5], posterior, lambda sigma: made[-1].kl(Prior(sigma)))
    assert isinstance(_PointMass(model, 0.5, per_row), Posterior)
    cert = certify(
        str(root / "base"), model, train, test, bound=_bound(m=1), tv=TVConfig(permutations=0),
        family=family, settings=CertifySettings(seed=4),
    )  # fmt: skip
    assert [p.sigma for p in made] == [0.5] and sorted(made[0].draws) == list(range(40))  # one own draw each
    point = example_losses(igsm_tokenizer(), train, "answer_error", gold=True).point(model)
    assert cert.empirical_risk.point == cert.empirical_risk.mc_mean == pytest.approx(point)
    assert cert.kl.value_nats == 3.0 and cert.kl.space == "toy point mass" and cert.sigma.grid == [0.5]
    pac = next(e for e in cert.delta.ledger["entries"] if e["term"].startswith("pac_bayes"))
    assert "K=1" in pac["term"] and cert.delta.per_grid_point_bound == pytest.approx(pac["delta"])
    d_b, upper = cert.delta.per_grid_point_bound, cert.empirical_risk.mc_upper
    seeger = kl_inverse_upper(upper, (3.0 + math.log(2 * math.sqrt(40) / d_b)) / 40)
    assert upper + cert.g_gen.seeger == pytest.approx(float(seeger), rel=1e-9)
    with pytest.raises(ValueError, match="family must be a PosteriorFamily"):
        certify(str(root / "base"), model, train, test, family=posterior)


def test_the_isotropic_family_is_the_default(run):
    """The engine always evaluates a family: passing the isotropic one explicitly gives the same
    document, number for number, as the default."""
    from pacbayes_sft.posteriors import isotropic_family

    root, train, test = run
    model = _peft(root)
    bound, tv = _bound(m=1, sigmas=[1e-2, 3e-2]), TVConfig(permutations=0)
    plain = certify(str(root / "base"), model, train, test, bound=bound, tv=tv)
    family = isotropic_family(model, "delta", [1e-2, 3e-2])
    explicit = certify(str(root / "base"), model, train, test, bound=bound, tv=tv, family=family)
    a, b = plain.to_dict(), explicit.to_dict()
    a.pop("versions", None), b.pop("versions", None)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
