"""Device checks that run on the CPU, each also on CUDA where there is one (``cuda`` marker).

Per-row posterior draws are read back exactly: a single LoRA-adapted linear layer y = W x fed the
identity (token t of row r is the unit vector e_t) outputs, under the delta-space draw of row r,
y + σ·E_r e_t, so (out_r − clean_r)ᵀ/σ is that row's noise matrix E_r itself. Its entries must be
independent N(0, 1) draws, the same on every run, and independent across rows. The meta device
stands in for a GPU where only *where* a tensor lives is checked: a tensor made on the CPU beside
parameters on meta is the same mistake as one made on the CPU beside parameters on CUDA.
"""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from pacbayes_sft.posteriors import GaussianPosterior, LearnedGaussianLoRA

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
D = 48  # features: each noise matrix has D² = 2,304 entries


class _Linear(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _layer(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_peft_model(_Linear(D), LoraConfig(r=2, lora_alpha=4, target_modules=["lin"], init_lora_weights=False))
    return model.to(device).eval()


def _noise(post: GaussianPosterior, ks: list[int], device: str) -> torch.Tensor:
    """E_r for every row r (row r drawn as sample ks[r]), read off the layer's output: float64, CPU."""
    x = torch.eye(D, device=device).expand(len(ks), D, D).contiguous()
    with torch.no_grad():
        clean = post.model(x)
        with post.sample_rows(ks) as mdl:
            noisy = mdl(x)
    return ((noisy - clean).double() / post.sigma).transpose(1, 2).cpu()


@pytest.mark.parametrize("device", DEVICES)
def test_per_row_delta_draws_are_independent_standard_normals_and_reproducible(device):
    post = GaussianPosterior(_layer(device), 1.0, "delta", seed=11)
    ks = [5, 9, 5, 200]
    e = _noise(post, ks, device)
    again = _noise(post, ks, device)
    assert torch.equal(e, again)  # a draw is a function of (seed, sample, layer): the same every run
    torch.testing.assert_close(e[0], e[2], rtol=0, atol=1e-5)  # the same sample in two rows
    n = D * D
    for r in (0, 1, 3):  # each an N(0, 1) sample: mean and variance within 5 standard errors
        assert abs(float(e[r].mean())) < 5 / math.sqrt(n)
        assert abs(float(e[r].var()) - 1) < 5 * math.sqrt(2 / n)
    for r, s in ((0, 1), (0, 3), (1, 3)):  # distinct samples are uncorrelated
        corr = float(torch.corrcoef(torch.stack([e[r].flatten(), e[s].flatten()]))[0, 1])
        assert abs(corr) < 5 / math.sqrt(n), (r, s, corr)
    # row r of the batch is what sample(ks[r]) computes on that row alone
    x = torch.eye(D, device=device).unsqueeze(0)
    with torch.no_grad():
        clean = post.model(x)
        with post.sample(ks[1]) as mdl:
            alone = ((mdl(x) - clean).double() / post.sigma).transpose(1, 2).cpu()[0]
    torch.testing.assert_close(alone, e[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_per_row_lora_draws_follow_their_sample_on_every_device(device):
    """In the LoRA-factor space each row's factors are drawn on the CPU generator: the outputs under
    sample_rows equal those of sample(k) row by row, and are reproducible."""
    post = GaussianPosterior(_layer(device), 0.5, "lora", seed=3)
    x = torch.randn(3, 4, D, generator=torch.Generator().manual_seed(1)).to(device)
    ks = [2, 7, 2]
    with torch.no_grad():
        with post.sample_rows(ks) as mdl:
            rows = mdl(x)
        with post.sample_rows(ks) as mdl:
            assert torch.equal(rows, mdl(x))
        for r, k in enumerate(ks):
            with post.sample(k) as mdl:
                torch.testing.assert_close(rows[r], mdl(x[r : r + 1])[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(rows[0], rows[1])


def test_learned_posterior_lives_on_the_models_device():
    """Every tensor of the learned posterior (ε, ρ, the prior centre) sits on the device of the
    factors it perturbs, after construction and after a draw; meta stands in for CUDA."""
    model = _layer("cpu").to("meta")
    try:  # registering the parametrisation computes μ + exp(ρ)·ε once
        post = LearnedGaussianLoRA(model, 0.01, centre="current")
    except RuntimeError as exc:
        if "device" not in str(exc):
            raise
        raise AssertionError(f"the learned posterior mixes devices: {exc}") from exc
    post.draw(torch.Generator().manual_seed(0))
    for mod in (m for m in model.modules() if hasattr(m, "parametrizations")):
        where = mod.parametrizations.weight.original.device
        perturb = mod.parametrizations.weight[0]
        assert (perturb.eps.device, perturb.rho.device) == (where, where)
    for a0, b0 in post._init.values():
        assert a0.device == b0.device == torch.device("meta")
