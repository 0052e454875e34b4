"""LoRA squared norms and KLs on tiny GPT-2, Llama and Qwen2 models built from config."""

import copy
import json

import numpy as np
import pytest
import torch
from peft import PeftModel

from pacbayes_sft.adapters import INIT_FILE, init_state_from_factors
from pacbayes_sft.estimators import lora_delta_sq_norm, lora_factors, lora_kl
from pacbayes_sft.training.models import attach_lora, tiny_causal_lm

ARCHS = ["gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("m,k,r,s", [(7, 5, 3, 1.0), (64, 48, 8, 2.0), (10, 300, 16, 0.25)])
def test_delta_sq_norm_matches_explicit_product(m, k, r, s):
    g = torch.Generator().manual_seed(m + k)
    A, B = torch.randn(r, k, generator=g), torch.randn(m, r, generator=g)
    ref = float((s * B.double() @ A.double()).square().sum())
    assert lora_delta_sq_norm(A, B, s) == pytest.approx(ref, rel=1e-10)
    assert lora_delta_sq_norm(A.numpy(), B.numpy(), s) == pytest.approx(ref, rel=1e-10)


def test_delta_sq_norm_conv_kernels():
    A, B = torch.randn(4, 3, 3, 3), torch.randn(6, 4, 1, 1)
    ref = float((B.flatten(1).double() @ A.flatten(1).double()).square().sum())
    assert lora_delta_sq_norm(A, B) == pytest.approx(ref, rel=1e-10)


def test_delta_sq_norm_rank_mismatch_and_bad_scaling():
    with pytest.raises(ValueError, match="rank mismatch"):
        lora_delta_sq_norm(torch.randn(4, 5), torch.randn(6, 3))
    with pytest.raises(ValueError, match="scaling"):
        lora_delta_sq_norm(torch.randn(4, 5), torch.randn(6, 4), float("nan"))
    with pytest.raises(ValueError, match="A"):
        lora_delta_sq_norm(torch.randn(4), torch.randn(6, 4))


def _randomise_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _merged_delta_sq(peft_model, pre_state):
    """Reference: Σ‖W_merged − W_pre‖² over every weight, by merging a copy."""
    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged_state = merged.state_dict()
    assert set(merged_state) == set(pre_state)
    return sum(float((merged_state[k].double() - pre_state[k].double()).square().sum()) for k in pre_state)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["plain", "rslora", "patterns"])
def test_lora_kl_delta_matches_merge(arch, variant, tmp_path):
    base = tiny_causal_lm(arch, seed=1)
    pre_state = {k: v.clone() for k, v in base.state_dict().items()}
    kwargs = {"r": 4, "alpha": 8.0}
    if variant == "rslora":
        kwargs["use_rslora"] = True
    if variant == "patterns":
        first = "c_attn" if arch == "gpt2" else "q_proj"
        kwargs["rank_pattern"] = {first: 2}
        kwargs["alpha_pattern"] = {first: 3.0}
    model = attach_lora(base, seed=2, **kwargs)
    _randomise_b(model, seed=3)
    sigma = 0.05
    # Independent reference: explicit float64 products from the peft layers.
    ref = 0.0
    for f in lora_factors(model):
        ref += float((f.scaling * f.B.double() @ f.A.double()).square().sum())
    got = lora_kl(model, sigma, space="delta")
    assert got == pytest.approx(ref / (2 * sigma**2), rel=1e-9)
    # And by merging the adapter into the weights (float32 weights: looser tolerance).
    assert got == pytest.approx(_merged_delta_sq(model, pre_state) / (2 * sigma**2), rel=1e-4)
    # Saved adapter directory gives the same number without the base model.
    model.save_pretrained(tmp_path)
    assert lora_kl(str(tmp_path), sigma) == pytest.approx(got, rel=1e-12)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["use_rslora"] == (variant == "rslora")


@pytest.mark.parametrize("arch", ARCHS)
def test_reloaded_adapter_same_kl_and_outputs(arch, tmp_path):
    model = attach_lora(tiny_causal_lm(arch, seed=4), r=4, alpha=4.0, seed=5)
    _randomise_b(model, seed=6)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(tiny_causal_lm(arch, seed=4), str(tmp_path))
    x = torch.randint(3, 60, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(x).logits, reloaded(x).logits)
    assert lora_kl(reloaded, 0.1) == pytest.approx(lora_kl(model, 0.1), rel=1e-12)


def test_lora_space_uses_initialisation(tmp_path):
    model = attach_lora(tiny_causal_lm("llama", seed=7), r=4, alpha=8.0, seed=8)
    init_state = init_state_from_factors(lora_factors(model))
    # At initialisation the posterior equals the prior in both spaces.
    assert lora_kl(model, 0.1, space="lora", init=init_state) == 0.0
    assert lora_kl(model, 0.1, space="delta") == 0.0
    g = torch.Generator().manual_seed(9)
    ref = 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                step = torch.randn(p.shape, generator=g) * 0.01
                p.add_(step)
                ref += float(step.double().square().sum())
    sigma = 0.2
    assert lora_kl(model, sigma, space="lora", init=init_state) == pytest.approx(ref / (2 * sigma**2), rel=1e-5)
    # From a directory with the init file beside the adapter.
    model.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    save_file(init_state, str(tmp_path / INIT_FILE))
    assert lora_kl(str(tmp_path), sigma, space="lora") == pytest.approx(ref / (2 * sigma**2), rel=1e-5)


def test_per_module_sigma_and_errors(tmp_path):
    model = attach_lora(tiny_causal_lm("qwen2", seed=1), r=2, alpha=2.0, seed=2)
    _randomise_b(model)
    names = [f.name for f in lora_factors(model)]
    sig = {n: 0.1 for n in names}
    assert lora_kl(model, sig) == pytest.approx(lora_kl(model, 0.1), rel=1e-12)
    sig[names[0]] = 0.2
    assert lora_kl(model, sig) < lora_kl(model, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        lora_kl(model, {names[0]: 0.1})
    with pytest.raises(ValueError, match="sigma"):
        lora_kl(model, 0.0)
    with pytest.raises(ValueError, match="space"):
        lora_kl(model, 0.1, space="weights")
    with pytest.raises(ValueError, match="init"):
        lora_kl(model, 0.1, space="lora")
    with pytest.raises(ValueError, match="no LoRA weights"):
        lora_kl(tiny_causal_lm("gpt2"), 0.1)
    with pytest.raises(ValueError, match="adapter directory"):
        lora_kl(str(tmp_path / "missing"), 0.1)
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["r"] = 5
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rank mismatch"):
        lora_kl(str(tmp_path), 0.1)


def test_kl_scales_inverse_square_sigma():
    model = attach_lora(tiny_causal_lm("gpt2", seed=3), r=2, alpha=4.0, seed=2)
    _randomise_b(model)
    k1, k2 = lora_kl(model, 0.1), lora_kl(model, 0.2)
    assert k1 == pytest.approx(4 * k2, rel=1e-12)
    assert np.isfinite(k1) and k1 > 0


def test_delta_difference_of_two_adapters_against_brute_force():
    from pacbayes_sft.adapters import LoraFactor
    from pacbayes_sft.posteriors.lora import lora_delta_diff_sq_norm

    g = torch.Generator().manual_seed(0)
    f1 = LoraFactor("m", torch.randn(4, 30, generator=g), torch.randn(20, 4, generator=g), 0.7)
    f2 = LoraFactor("m", torch.randn(2, 30, generator=g), torch.randn(20, 2, generator=g), 1.3)  # another rank
    brute = float(((0.7 * f1.B.double() @ f1.A.double() - 1.3 * f2.B.double() @ f2.A.double()) ** 2).sum())
    assert lora_delta_diff_sq_norm(f1, f2) == pytest.approx(brute, rel=1e-10)
    assert lora_delta_diff_sq_norm(f1, f1) == pytest.approx(0.0, abs=1e-9)


def test_data_dependent_prior_kl_against_merged_weights():
    from pacbayes_sft.estimators import lora_kl
    from pacbayes_sft.training.models import attach_lora, tiny_causal_lm

    def adapter(seed):
        m = attach_lora(tiny_causal_lm("llama", 50, seed=0, hidden=32, layers=1), r=4, alpha=8.0, seed=seed)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + len(name))) * 0.1)
        return m

    post, prior = adapter(1), adapter(2)
    w_post = {k: v.double() for k, v in adapter(1).merge_and_unload().state_dict().items()}
    w_prior = {k: v.double() for k, v in adapter(2).merge_and_unload().state_dict().items()}
    brute = sum(float(((w_post[k] - w_prior[k]) ** 2).sum()) for k in w_post) / (2 * 0.05**2)
    assert lora_kl(post, 0.05, prior=prior) == pytest.approx(brute, rel=1e-6)
    assert lora_kl(post, 0.05, prior=post) == pytest.approx(0.0, abs=1e-6)
    # lora space: the prior's trained factors are the centre
    fa = {n: p.detach().double() for n, p in post.named_parameters() if "lora_" in n}
    fb = {n: p.detach().double() for n, p in prior.named_parameters() if "lora_" in n}
    brute_lora = sum(float(((fa[k] - fb[k]) ** 2).sum()) for k in fa) / (2 * 0.05**2)
    assert lora_kl(post, 0.05, space="lora", prior=prior) == pytest.approx(brute_lora, rel=1e-6)
