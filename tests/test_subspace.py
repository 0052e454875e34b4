"""LoRA in a random subspace: the closed-form KL, the parametrisation, training and MC risk."""

import math

import pytest
import torch

from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example
from pacbayes_sft.posteriors import LoRASubspace, SubspacePosterior, subspace_kl
from pacbayes_sft.training.models import attach_lora, build_model, tiny_config
from pacbayes_sft.training.subspace import train_subspace


def _model():
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=16, layers=1, heads=2, max_positions=512), seed=0)
    return attach_lora(base, r=2, alpha=4.0, seed=0), tok


@pytest.mark.parametrize("s", [None, 0.05, 0.3])
def test_subspace_kl_is_the_gaussian_closed_form(s):
    z = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 0.2
    q = torch.distributions.Normal(z.double(), s or 0.1)
    p = torch.distributions.Normal(torch.zeros(50, dtype=torch.float64), 0.1)
    assert subspace_kl(z, 0.1, s) == pytest.approx(float(torch.distributions.kl_divergence(q, p).sum()), rel=1e-12)


def test_the_subspace_starts_at_the_adapter_and_preserves_norms():
    model, _ = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    sub = LoRASubspace(model, 64, seed=1)
    after = {
        n.replace(".parametrizations.weight.original", ".weight"): p
        for n, p in model.named_parameters()
        if "lora_" in n
    }
    for n, w in before.items():
        assert torch.equal(after[n], w)
    with torch.no_grad():
        sub.z.copy_(torch.randn(64, generator=torch.Generator().manual_seed(2)))
        moved = math.sqrt(sum(float((sub.offset(i) ** 2).sum()) for i in range(len(sub.mods))))
    assert moved == pytest.approx(sub.z.detach().norm().item(), rel=0.1)  # P has N(0, 1/D) entries: ||Pz|| ~ ||z||
    assert sub.kl(0.5) == pytest.approx((sub.z.detach().double() ** 2).sum().item() / (2 * 0.25))


def test_training_z_lowers_the_loss_and_the_posterior_samples():
    model, tok = _model()
    probs = generate(32, [1], split="train", seed=3)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    sub, hist = train_subspace(model, tok, prompts, responses, dim=32, steps=30, lr=0.5, batch_size=32)
    assert sum(hist[-5:]) / 5 < sum(hist[:5]) / 5
    # only z trains: every parameter of the model itself is frozen
    assert not [p for p in model.parameters() if p.requires_grad] and sub.z.requires_grad
    post = SubspacePosterior(sub, model, 0.1, seed=4)
    losses = [0.0]

    def example_loss(m, i):
        x = torch.tensor([[1, 5, 6]])
        with torch.no_grad():  # a [0, 1] loss that depends on the draw
            return torch.sigmoid(m(input_ids=x).logits[0, -1, 0]).item()

    risk = mc_stochastic_risk_per_example(post, example_loss, 8, 1, 0.05)
    assert 0 <= risk.mean <= risk.upper <= 1 and risk.m == 8
    assert float(sub.noise.abs().sum()) == 0.0 and losses == [0.0]  # the noise is removed after each draw


def test_a_data_dependent_subspace_prior_is_centred_at_the_held_out_coordinates():
    model, tok = _model()
    probs = generate(32, [1], split="train", seed=3)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    sub, _ = train_subspace(model, tok, prompts[:16], responses[:16], dim=24, steps=5, lr=0.5, batch_size=16)
    z_p = sub.z.detach().clone()
    sub.fix_prior_centre()
    assert sub.kl(0.3) == 0.0  # posterior = prior
    same, _ = train_subspace(model, tok, prompts[16:], responses[16:], dim=24, steps=5, lr=0.5, subspace=sub)
    assert same is sub and not torch.equal(sub.z.detach(), z_p)  # training continued from z_p
    q = torch.distributions.Normal(sub.z.detach().double(), 0.3)
    p = torch.distributions.Normal(z_p.double(), 0.3)
    assert sub.kl(0.3) == pytest.approx(float(torch.distributions.kl_divergence(q, p).sum()), rel=1e-9)


def test_certificate_of_a_subspace_posterior():
    from pacbayes_sft.certify import (
        BoundConfig,
        GridOptions,
        PosteriorFamily,
        certificate_core,
        plan_delta,
        teacher_forced_losses,
    )
    from pacbayes_sft.certify.certificate import TVTerm

    model, tok = _model()
    probs = generate(16, [1], split="train", seed=5)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    sub, _ = train_subspace(model, tok, prompts, responses, dim=16, steps=5, lr=0.5, batch_size=16)
    grid = [0.1, 1.0]
    fam = PosteriorFamily("subspace (d=16)", grid, lambda s, seed: SubspacePosterior(sub, model, s, seed=seed), sub.kl)
    cfg = BoundConfig(sigmas=grid, m=1, loss="token_error")
    losses = teacher_forced_losses(tok, prompts, responses, cfg.loss)
    cert = certificate_core(
        model,
        losses,
        TVTerm.plain(0.0, 16, 16, "none"),
        cfg,
        plan_delta(cfg, 16, tv_interval=False),
        options=GridOptions(family=fam),
    )
    assert cert.kl.space == "subspace (d=16)" and cert.kl.value_nats == pytest.approx(sub.kl(cert.sigma.value))
    assert cert.empirical_risk.mc_losses == 16 and len(cert.grid) == 2
    with pytest.raises(ValueError, match="posterior family"):
        bad = BoundConfig(sigmas=[0.1, 1.0, 2.0], m=1, loss="token_error")
        none = TVTerm.plain(0.0, 16, 16, "none")
        certificate_core(model, losses, none, bad, plan_delta(bad, 16), options=GridOptions(family=fam))
