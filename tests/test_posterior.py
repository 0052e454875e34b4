"""Posterior sampling: bit-exact restore, determinism, σ→0 limit, delta-space hook maths."""

import copy

import pytest
import torch

from pacbayes_sft.adapters import lora_layers as _lora_layers
from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk
from pacbayes_sft.posteriors.isotropic import GaussianPosterior, _seed
from pacbayes_sft.training.models import attach_lora, tiny_causal_lm


def _model(arch="llama", seed=0):
    m = attach_lora(tiny_causal_lm(arch, seed=seed), r=4, alpha=8.0, seed=seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return m.eval()


X = torch.randint(3, 60, (3, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("space", ["lora", "delta"])
def test_restore_is_bit_exact_and_samples_differ(space):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(X).logits
        post = GaussianPosterior(model, 0.05, space, seed=3)
        with post.sample(0) as mdl:
            a = mdl(X).logits
        with post.sample(0) as mdl:
            a2 = mdl(X).logits
        with post.sample(1) as mdl:
            b = mdl(X).logits
        after = model(X).logits
    assert torch.equal(a, a2)  # a sample is a pure function of (seed, index)
    assert not torch.equal(a, b) and not torch.equal(a, ref)
    assert torch.equal(ref, after)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_restore_after_exception():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError), GaussianPosterior(model, 0.1, "lora").sample(0):
        raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_delta_hook_equals_explicit_weight_noise(arch):
    model = _model(arch)
    sigma, seed, index = 0.03, 5, 2
    explicit = copy.deepcopy(model)
    with torch.no_grad():
        for li, (_, layer) in enumerate(_lora_layers(explicit)):
            w = layer.get_base_layer().weight
            gen = torch.Generator().manual_seed(_seed(seed, index, li))
            w.add_(sigma * torch.randn(w.shape, generator=gen))
        with GaussianPosterior(model, sigma, "delta", seed=seed).sample(index) as mdl:
            got = mdl(X).logits
        ref = explicit(X).logits
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_mc_risk_sigma_zero_equals_point_risk_and_bounds():
    model = _model()

    def risk(mdl):
        with torch.no_grad():
            return float((mdl(X).logits.argmax(-1) != X).float().mean())

    point = risk(model)
    mc0 = mc_stochastic_risk(GaussianPosterior(model, 0.0, "delta"), risk, 5, 0.01)
    assert mc0.mean == point and mc0.per_sample == [point] * 5
    mc = mc_stochastic_risk(GaussianPosterior(model, 0.05, "lora"), risk, 7, 0.01)
    assert len(mc.per_sample) == 7
    assert mc.mean == pytest.approx(sum(mc.per_sample) / 7)
    assert mc.upper >= mc.mean


def test_posterior_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="space"):
        GaussianPosterior(model, 0.1, "weights")
    with pytest.raises(ValueError, match="sigma"):
        GaussianPosterior(model, -0.1)
    with pytest.raises(ValueError, match="LoRA"):
        GaussianPosterior(tiny_causal_lm("gpt2"), 0.1)
    with pytest.raises(ValueError, match="m must"):
        mc_stochastic_risk(GaussianPosterior(model, 0.1), lambda m: 0.1, 0, 0.05)
    with pytest.raises(ValueError, match="risk"):
        mc_stochastic_risk(GaussianPosterior(model, 0.1), lambda m: 1.5, 2, 0.05)


def test_per_example_draws_are_distinct_samples_and_reproducible():
    from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example

    model = _model()
    post = GaussianPosterior(model, 0.05, "lora", seed=2)
    seen = {}

    def loss(mdl, i):
        with torch.no_grad():
            seen[(len(seen), i)] = mdl(X[i : i + 1]).logits.clone()
        return 0.5

    mc = mc_stochastic_risk_per_example(post, loss, 3, 2, 0.05)
    assert mc.m == 6 and mc.scheme == "per_example" and mc.per_sample == [0.5, 0.5]
    keys = sorted(seen)
    for k, i in keys:  # call k used posterior sample k (= round * n + example)
        with torch.no_grad(), post.sample(k) as mdl:
            torch.testing.assert_close(mdl(X[i : i + 1]).logits, seen[(k, i)], rtol=0, atol=0)
    # the same example in two rounds sees two different samples
    assert not torch.equal(seen[(0, 0)], seen[(3, 0)])
    from pacbayes_sft.bounds import mc_risk_upper

    assert mc.upper == pytest.approx(mc_risk_upper(0.5, 6, 0.05))
    with pytest.raises(ValueError, match="draws"):
        mc_stochastic_risk_per_example(post, loss, 3, 0, 0.05)
    with pytest.raises(ValueError, match="example 0"):
        mc_stochastic_risk_per_example(post, lambda m, i: float("nan"), 3, 1, 0.05)


def test_per_example_and_shared_schemes_estimate_the_same_gibbs_risk():
    from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example

    model = _model()
    sigma = 0.3

    def ex_loss(mdl, i):  # a smooth loss in [0, 1] of example i
        with torch.no_grad():
            return min(1.0, 10 * float(torch.softmax(mdl(X[i : i + 1]).logits, -1)[0, :, 5].mean()))

    def risk(mdl):
        return sum(ex_loss(mdl, i) for i in range(3)) / 3

    d = 300
    per = mc_stochastic_risk_per_example(GaussianPosterior(model, sigma, "lora", seed=1), ex_loss, 3, d, 0.05)
    shared = mc_stochastic_risk(GaussianPosterior(model, sigma, "lora", seed=9), risk, d, 0.05)
    sd = torch.tensor(shared.per_sample).std().item()
    assert sd > 0
    assert abs(per.mean - shared.mean) < 5 * sd * (2 / d) ** 0.5
    assert per.upper - per.mean < shared.upper - shared.mean  # n*d losses beat d shared samples


@pytest.mark.parametrize("space", ["lora", "delta"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sample_rows_gives_each_row_its_own_sample(space, arch):
    """Row r of a batch under sample_rows(ks) computes what sample(ks[r]) computes for that row."""
    model = _model(arch)
    post = GaussianPosterior(model, {n: 0.04 + 0.01 * i for i, (n, _) in enumerate(_lora_layers(model))}, space, seed=5)
    ks = [7, 2, 11]
    with torch.no_grad():
        with post.sample_rows(ks) as mdl:
            rows = mdl(X).logits
        for r, k in enumerate(ks):
            with post.sample(k) as mdl:
                one = mdl(X[r : r + 1]).logits
            torch.testing.assert_close(rows[r : r + 1], one, rtol=1e-4, atol=1e-5)
        plain = model(X).logits
    assert not torch.allclose(rows, plain)  # the hooks are gone afterwards and did change the output
    with pytest.raises(ValueError, match="rows"), torch.no_grad(), post.sample_rows([1, 2]) as mdl:
        mdl(X)


def test_batched_per_example_draws_equal_the_sequential_ones():
    from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example

    model = _model()
    post = GaussianPosterior(model, 0.2, "delta", seed=4)

    def probs(mdl, idx):
        with torch.no_grad():
            return torch.softmax(mdl(X[idx]).logits, -1)[:, :, 5].mean(1).tolist()

    seq = mc_stochastic_risk_per_example(post, lambda m, i: probs(m, [i])[0], 3, 4, 0.05)
    bat = mc_stochastic_risk_per_example(post, None, 3, 4, 0.05, batch_loss_fn=probs, batch_size=5)
    assert bat.m == seq.m == 12
    assert bat.mean == pytest.approx(seq.mean, rel=1e-5)
    assert bat.per_sample == pytest.approx(seq.per_sample, rel=1e-5)


def test_per_row_draws_never_share_a_generator_state():
    """Over about 10^6 (row, layer) pairs of one posterior, no two seeds agree in the low 32 bits
    (all that torch's CPU generator keys on), so every per-row draw is independent."""
    rows, layers = 40_000, 28
    for seed in (0, 7, 10_007):
        low = {_seed(seed, k, li) & 0xFFFFFFFF for k in range(rows) for li in range(layers)}
        assert len(low) == rows * layers
    # the collision of the former mixer is gone, and the lora space's (seed, row) seeds differ too
    assert _seed(0, 16, 21) & 0xFFFFFFFF != _seed(0, 60, 0) & 0xFFFFFFFF
    assert len({_seed(3, k) & 0xFFFFFFFF for k in range(100_000)}) == 100_000
    # equal low bits really are one stream for torch: what the test above rules out
    a = torch.randn(4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, torch.randn(4, generator=torch.Generator().manual_seed(5 + 2**32)))
    with pytest.raises(ValueError, match="mc_examples"):
        _seed(0, 0, 256)
    # a model with more adapted layers than 256 widens the slots instead of failing
    wide = {_seed(1, k, li, 300) & 0xFFFFFFFF for k in range(2_000) for li in range(300)}
    assert len(wide) == 2_000 * 300


def test_posterior_refuses_lora_layers_it_would_not_perturb_as_the_kl_counts_them():
    """Embedding LoRA (its factors are ParameterDicts the draws never touch), DoRA (its update is
    not s·BA) and a merged adapter (the LoRA branch no longer runs): a clear error, not a posterior
    that silently samples something other than what its KL describes."""
    from peft import LoraConfig, get_peft_model

    def peft_model(**kw):
        cfg = LoraConfig(r=2, lora_alpha=4, target_modules=kw.pop("targets", ["q_proj", "v_proj"]), **kw)
        return get_peft_model(tiny_causal_lm("llama", seed=0), cfg)

    with pytest.raises(ValueError, match="embedding"):
        GaussianPosterior(peft_model(targets=["q_proj", "embed_tokens"]), 0.1, "lora")
    with pytest.raises(ValueError, match="DoRA"):
        GaussianPosterior(peft_model(use_dora=True), 0.1, "delta")
    merged = peft_model()
    merged.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        GaussianPosterior(merged, 0.1, "lora")
    GaussianPosterior(peft_model(), 0.1, "lora")  # plain LoRA on linear layers is fine
