"""The PAC-Bayes training objective over LoRA factors: closed-form KL, gradients, and training."""

import math

import pytest
import torch

from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.lm.encoding import collate, encode
from pacbayes_sft.training.models import attach_lora, build_model, tiny_config
from pacbayes_sft.training.pacbayes_objective import (
    LearnedGaussianLoRA,
    PacBayesConfig,
    bounded_ce,
    pac_bayes_objective,
    sequence_error,
    train_pacbayes,
)


def _model(double=False):
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=16, layers=1, heads=2, max_positions=512), seed=0)
    model = attach_lora(base, r=2, alpha=4.0, seed=0)
    return (model.double() if double else model), tok


def _batch(tok, n=6):
    probs = generate(n, [1, 2], split="train", seed=0)
    return collate(encode(tok, [p.prompt for p in probs], [p.response for p in probs]), tok.pad_token_id)


def test_kl_matches_the_gaussian_closed_form_from_torch_distributions():
    model, _ = _model()
    post = LearnedGaussianLoRA(model, prior_sigma=0.05, init_scale=0.3, centre="current")
    with torch.no_grad():
        for p in post.means():
            p.add_(0.01)
    ref = 0.0
    for key, (a, b) in post._weights.items():
        s = math.exp(post.rho[key].item())
        for mu, mu0 in (
            (a.parametrizations.weight.original, post._init[key][0]),
            (b.parametrizations.weight.original, post._init[key][1]),
        ):
            q = torch.distributions.Normal(mu.detach().double(), s)
            p = torch.distributions.Normal(mu0.double(), 0.05)
            ref += float(torch.distributions.kl_divergence(q, p).sum())
    assert post.kl().item() == pytest.approx(ref, rel=1e-9)


def test_gradient_wrt_the_scales_matches_finite_differences():
    model, tok = _model(double=True)
    post = LearnedGaussianLoRA(model, prior_sigma=0.05, init_scale=0.5, centre="current")
    post.double()
    batch = _batch(tok)
    post.draw(torch.Generator().manual_seed(1))  # a fixed ε: the objective is then deterministic

    def objective():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return pac_bayes_objective(bounded_ce(logits, batch["labels"], 1e-4), post.kl(), 100, 0.05, "quad")

    key = post.names[0]
    obj = objective()
    (grad,) = torch.autograd.grad(obj, post.rho[key])
    h = 1e-5
    with torch.no_grad():
        post.rho[key] += h
        up = float(objective())
        post.rho[key] -= 2 * h
        down = float(objective())
        post.rho[key] += h
    assert float(grad) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


def test_sequence_error_is_one_minus_the_chain_rule_probability_of_the_response():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (3, 6), generator=gen)
    labels[:, :2] = -100  # the prompt
    labels[1, 5] = -100  # padding
    ref = []
    for i in range(3):  # brute force: multiply the softmax probabilities of the response tokens
        p = 1.0
        for t in range(1, 6):
            if labels[i, t] >= 0:
                p *= float(torch.softmax(logits[i, t - 1], -1)[labels[i, t]])
        ref.append(1 - p)
    assert float(sequence_error(logits, labels)) == pytest.approx(sum(ref) / 3, rel=1e-6)  # float32 log-softmax


def test_a_response_with_probability_above_one_half_is_the_greedy_one():
    # The sequence surrogate's premise: p(y|x) > 1/2 forces every conditional above 1/2, so each
    # greedy step picks y_t. Checked on random peaked distributions.
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        logits = 3 * torch.randn(1, 5, 4, generator=gen, dtype=torch.float64)
        labels = torch.randint(0, 4, (1, 5), generator=gen)
        labels[0, 0] = -100
        if float(sequence_error(logits, labels)) < 0.5:
            assert torch.equal(logits[0, :-1].argmax(-1), labels[0, 1:])


def test_the_sequence_surrogate_trains_and_lowers_the_bound():
    model, tok = _model()
    probs = generate(32, [1], split="train", seed=1)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    cfg = PacBayesConfig(prior_sigma=0.1, steps=30, lr=3e-2, lr_scale=5e-2, batch_size=32, surrogate="sequence")
    _, history = train_pacbayes(model, tok, prompts, responses, cfg, centre="current")
    assert all(math.isfinite(h) and h >= 0 for h in history)
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5
    with pytest.raises(ValueError, match="surrogate"):
        PacBayesConfig(surrogate="answer")


def test_a_few_steps_lower_the_bound():
    model, tok = _model()
    probs = generate(32, [1], split="train", seed=1)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    cfg = PacBayesConfig(prior_sigma=0.1, steps=40, lr=3e-2, lr_scale=5e-2, batch_size=32)
    post, history = train_pacbayes(model, tok, prompts, responses, cfg, centre="current")
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5  # the bound objective went down
    assert all(0 < s for s in post.scales().values())
    post.remove()  # the means stay as the adapter's weights
    assert not any("parametrizations" in n for n, _ in model.named_parameters())


def test_certificate_of_a_learned_posterior():
    from pacbayes_sft.certify import certify_learned_posterior, teacher_forced_losses
    from pacbayes_sft.certify.certificate import TVTerm

    model, tok = _model()
    probs = generate(24, [1], split="train", seed=2)
    prompts, responses = [p.prompt for p in probs], [p.response for p in probs]
    post, _ = train_pacbayes(
        model, tok, prompts, responses, PacBayesConfig(prior_sigma=0.1, steps=5, batch_size=8), centre="current"
    )
    kl = post.kl().item()
    losses = teacher_forced_losses(tok, prompts, responses, "token_error")
    info = {"kind": "data-free", "centre": "the adapter's initial factors"}
    tv = TVTerm.plain(0.1, 24, 24, "a proxy")
    cert = certify_learned_posterior(model, post, losses, tv, loss="token_error", seed=3, prior_info=info)
    assert cert.prior["centre"] == "the adapter's initial factors" and cert.prior["sigma"] == 0.1
    assert cert.kl.value_nats == pytest.approx(kl) and cert.n == 24 and cert.empirical_risk.mc_losses == 24
    assert cert.empirical_risk.mc_upper >= cert.empirical_risk.mc_mean
    assert cert.empirical_risk.mc_upper + cert.g_gen.seeger <= 1.0 + 1e-12
    assert abs(cert.delta.ledger["spent"] - 0.05) < 1e-12 and not cert.certified
    from pacbayes_sft.certify import stochastic_risk

    scales = cert.prior["posterior_scales"]
    st = stochastic_risk(model, losses, scales, "lora", seed=1)  # per-module scales, as certified
    assert st.sigma == pytest.approx(sum(scales.values()) / len(scales)) and 0 <= st.lower <= st.mean <= st.upper
    assert set(cert.prior["posterior_scales"]) == {
        n for n, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A
    }
    assert not any("parametrizations" in n for n, _ in model.named_parameters())


def test_the_prior_centre_must_be_explicit():
    model, _ = _model()
    with pytest.raises(TypeError):
        LearnedGaussianLoRA(model, prior_sigma=0.05)  # no silent default: the centre decides validity
    with pytest.raises(ValueError, match="centre must be"):
        LearnedGaussianLoRA(model, prior_sigma=0.05, centre=3)
