"""The posterior families as one package: the protocol, the KL registry's dispatch, each family's
KL against an independent reference, and the one walk over a model's LoRA layers."""

import math

import numpy as np
import pytest
import torch

from pacbayes_sft.adapters import init_state_from_factors, lora_factors, lora_layers
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example
from pacbayes_sft.posteriors import (
    GaussianPosterior,
    LearnedGaussianLoRA,
    LoRASubspace,
    Posterior,
    PosteriorFamily,
    Prior,
    SubspacePosterior,
    isotropic_family,
    kl_divergence,
    learned_family,
    lora_kl,
    register_kl,
)
from pacbayes_sft.posteriors.kl import _KL_REGISTRY
from pacbayes_sft.training.models import attach_lora, build_model, tiny_causal_lm, tiny_config


def _model(seed=0):
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=16, layers=1, heads=2, max_positions=64), seed=seed)
    model = attach_lora(base, r=2, alpha=4.0, seed=seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model.eval()


class _Q:
    pass


class _SubQ(_Q):
    pass


class _P:
    pass


@pytest.fixture
def registry():
    saved = dict(_KL_REGISTRY)
    yield
    _KL_REGISTRY.clear()
    _KL_REGISTRY.update(saved)


def test_the_registry_dispatches_on_both_types_and_names_a_missing_pair(registry):
    @register_kl(_Q, _P)
    def _base(q, p):
        return 1.0

    assert kl_divergence(_Q(), _P()) == 1.0
    assert kl_divergence(_SubQ(), _P()) == 1.0  # a subclass inherits its parent's closed form

    @register_kl(_SubQ, _P)
    def _specific(q, p):
        return 2.0

    assert kl_divergence(_SubQ(), _P()) == 2.0 and kl_divergence(_Q(), _P()) == 1.0  # the nearest pair wins
    with pytest.raises(ValueError, match="no closed-form KL is registered for posterior _P and prior _Q"):
        kl_divergence(_P(), _Q())
    with pytest.raises(ValueError, match="two classes"):
        register_kl(_Q(), _P)

    @register_kl(_Q, Prior)
    def _negative(q, p):
        return -0.5

    with pytest.raises(ValueError, match="not a finite value >= 0"):
        kl_divergence(_Q(), Prior())


def test_every_family_is_a_posterior_and_says_whether_it_draws_per_row():
    model = _model()
    iso = GaussianPosterior(model, 0.01, "lora")
    assert isinstance(iso, Posterior) and iso.per_row
    sub = SubspacePosterior(LoRASubspace(_model(), 8, seed=0), model, 0.1)
    assert isinstance(sub, Posterior) and not sub.per_row
    with pytest.raises(TypeError, match="one sample per batch"):
        sub.sample_rows([0, 1])
    # the per-example Monte-Carlo risk scores such a family one example per draw, through sample()
    seen = []

    def one(m, i):
        seen.append(i)
        return 0.5

    def batch(m, idx):
        raise AssertionError("a family without per-row draws must not be batched")

    mc = mc_stochastic_risk_per_example(sub, one, 3, 2, 0.05, batch_loss_fn=batch)
    assert seen == [0, 1, 2, 0, 1, 2] and mc.m == 6 and mc.mean == 0.5


def _factor_sq(model, centre):
    """Σ per module of ‖A − A₀‖² + ‖B − B₀‖² in numpy float64, and the factor count d_m."""
    out = {}
    for f in lora_factors(model):
        a0, b0 = centre[f.name + ".lora_A"].numpy(), centre[f.name + ".lora_B"].numpy()
        a, b = f.A.numpy().astype(np.float64), f.B.numpy().astype(np.float64)
        out[f.name] = (float(((a - a0) ** 2).sum() + ((b - b0) ** 2).sum()), a.size + b.size)
    return out


def test_isotropic_kl_is_the_gaussian_closed_form():
    model = _model()
    centre = {k: torch.zeros_like(v) if k.endswith("lora_B") else v + 0.01 for k, v in _init(model).items()}
    # equal scales: ‖θ − θ₀‖² / (2σ²), the same number lora_kl gives
    post = GaussianPosterior(model, 0.02, "lora")
    sq = _factor_sq(model, centre)
    want = sum(s for s, _ in sq.values()) / (2 * 0.02**2)
    assert post.kl(Prior(init=centre)) == pytest.approx(want, rel=1e-6)  # float32 differences, float64 sums
    assert post.kl(Prior(init=centre)) == lora_kl(model, 0.02, "lora", init=centre)
    # per-module scales s_m against σ_p: ½ Σ_m [d_m (s_m²/σ_p² − 1 − ln(s_m²/σ_p²)) + sq_m/σ_p²]
    scales = {name: 0.01 + 0.005 * i for i, name in enumerate(sq)}
    sp = 0.03
    want = sum(
        0.5 * (d * (scales[n] ** 2 / sp**2 - 1 - math.log(scales[n] ** 2 / sp**2)) + s / sp**2)
        for n, (s, d) in sq.items()
    )
    assert GaussianPosterior(model, scales, "lora").kl(Prior(sigma=sp, init=centre)) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="'lora' space only"):
        GaussianPosterior(model, 0.02, "delta").kl(Prior(sigma=sp))
    with pytest.raises(ValueError, match="sigma"):
        Prior(sigma=0.0)


def _init(model):
    return init_state_from_factors(lora_factors(model))


def test_isotropic_family_builds_posteriors_and_their_kl():
    model = _model()
    fam = isotropic_family(model, "delta", [0.01, 0.02])
    assert fam.grid == [0.01, 0.02] and fam.space == "delta"
    post = fam.posterior(0.02, 3)
    assert isinstance(post, GaussianPosterior) and post.seed == 3 and post.sigma == 0.02
    assert fam.kl(0.02) == lora_kl(model, 0.02, "delta")
    with pytest.raises(ValueError, match="space"):
        isotropic_family(model, "weights", [0.1])
    with pytest.raises(ValueError, match="grid"):
        PosteriorFamily("x", [], fam.posterior, fam.kl)


def test_learned_kl_is_the_trainers_kl():
    """The learned family's closed form (from the scales and the adapters) equals the trainer's
    differentiable KL, written separately over the parametrised factors."""
    model = _model()
    centre = _init(model)
    post = LearnedGaussianLoRA(model, prior_sigma=0.03, init_scale=0.6, centre=centre)
    with torch.no_grad():
        for i, rho in enumerate(post.rho.values()):
            rho.add_(0.1 * i)
        for mu in post.means():
            mu.add_(0.01)
    want = float(post.kl().detach())
    scales, prior = post.module_scales(), post.prior()
    post.remove()
    assert prior.sigma == 0.03
    assert GaussianPosterior(model, scales, "lora").kl(prior) == pytest.approx(want, rel=1e-9)
    assert learned_family(model, scales, prior).kl(0.03) == pytest.approx(want, rel=1e-9)
    assert learned_family(model, scales, prior, kl=1.5).kl(0.03) == 1.5
    with pytest.raises(ValueError, match="sigma_p"):
        learned_family(model, scales, Prior())


@pytest.mark.parametrize("sigma_p", [None, 0.5])
def test_subspace_kl_against_monte_carlo(sigma_p):
    """E_q[ln q(z) − ln p(z)] over 400k draws of z ~ q agrees with the closed form."""
    model = _model()
    sub = LoRASubspace(model, 6, seed=2)
    with torch.no_grad():
        sub.z.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0, 0.25, -0.4]))
    sub.fix_prior_centre()
    with torch.no_grad():
        sub.z.add_(0.2)
    s = 0.3
    closed = SubspacePosterior(sub, model, s).kl(Prior(sigma=sigma_p))
    sp = s if sigma_p is None else sigma_p
    rng = np.random.default_rng(0)
    zq, zp = sub.z.detach().double().numpy(), sub.centre.double().numpy()
    draws = zq + s * rng.standard_normal((400_000, 6))
    log_q = -0.5 * (((draws - zq) / s) ** 2).sum(1) - 6 * math.log(s)
    log_p = -0.5 * (((draws - zp) / sp) ** 2).sum(1) - 6 * math.log(sp)
    mc = float((log_q - log_p).mean())
    assert closed == pytest.approx(mc, rel=0.02, abs=0.02)
    if sigma_p is None:
        assert closed == pytest.approx(sub.kl(s), rel=1e-12)
    with pytest.raises(ValueError, match="own centre"):
        SubspacePosterior(sub, model, s).kl(Prior(sigma=0.5, init={}))


def test_one_walk_over_the_lora_layers_refuses_the_same_layers_everywhere():
    """Every walker goes through adapters.lora_layers: a DoRA adapter is refused by the posterior,
    the learned parametrisation and the subspace alike; the factors of a merged adapter are still
    read (a KL needs no perturbation), but no posterior moves them."""
    from peft import LoraConfig, get_peft_model

    def peft_model(**kw):
        cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], **kw)
        return get_peft_model(tiny_causal_lm("llama", seed=0), cfg)

    for build in (
        lambda m: GaussianPosterior(m, 0.1, "lora"),
        lambda m: LearnedGaussianLoRA(m, 0.05, centre="current"),
        lambda m: LoRASubspace(m, 4),
    ):
        with pytest.raises(ValueError, match="DoRA"):
            build(peft_model(use_dora=True))
        with pytest.raises(ValueError, match="no LoRA"):
            build(tiny_causal_lm("llama", seed=0))
    merged = peft_model()
    merged.merge_adapter()
    assert len(lora_factors(merged)) == len(lora_layers(merged, perturbed=False)) == 4
    with pytest.raises(ValueError, match="merged"):
        lora_layers(merged)
