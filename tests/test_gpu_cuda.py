"""What only a CUDA device can show (every test is marked ``cuda``: skipped without one).

- Greedy decoding on CUDA, dropping finished rows and verified against a reference, equals plain
  ``model.generate`` greedy decoding row by row, also under per-row posterior draws.
- LoRA-factor-space draws are made on the CPU generator, so a model on CUDA computes with the very
  draws the CPU computes with (delta-space draws come from the device's own generator: on CUDA they
  are other, equally valid, draws; tests/test_gpu_devices.py checks them on each device).
- A certificate computed on CUDA equals the CPU one within the tolerance stated at
  :data:`CERT_TOL`: the same adapter and the same draws, so only float rounding differs.
"""

import copy
from pathlib import Path

import pytest
import torch
from greedy_reference import plain_greedy

from pacbayes_sft.adapters import INIT_FILE, attach_adapter, init_state_from_factors, lora_factors, save_init_state
from pacbayes_sft.certify import BoundConfig, CertifySettings, EvalConfig, TVConfig, certify
from pacbayes_sft.certify.certificate import numbers
from pacbayes_sft.data import generate
from pacbayes_sft.lm.decoding import greedy_continue, greedy_verified
from pacbayes_sft.posteriors import GaussianPosterior
from pacbayes_sft.sweep.config import SHIPPED_BASE
from pacbayes_sft.training.models import attach_lora, load_causal_lm, tiny_causal_lm

pytestmark = pytest.mark.cuda

PAD = 0
PROMPTS = [[1, 5, 9], [1, 7], [1, 3, 4, 12, 30, 6], [1, 22, 40, 2], [1, 8, 8, 8, 8]]
CAP = 24


def _model(device: str) -> torch.nn.Module:
    m = attach_lora(tiny_causal_lm("llama", seed=3), r=4, alpha=8.0, seed=4)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(5))
    return m.to(device).eval()


def _eos(model) -> int:
    """The token greedy decoding emits most often, so rows end at different steps."""
    outs = [plain_greedy(model, p, CAP, eos=10_000) for p in PROMPTS]
    tokens = [t for o in outs for t in o[1:]]
    return max(set(tokens), key=tokens.count)


def check_decoding(device: str) -> None:
    """Dropping finished rows and verified decoding against plain greedy decoding on ``device``."""
    model = _model(device)
    eos = _eos(model)
    limits = [CAP, 5, CAP, 1, 13]
    got = greedy_continue(model, PROMPTS, limits, eos_token_id=eos, pad_token_id=PAD)
    assert got == [plain_greedy(model, p, m, eos) for p, m in zip(PROMPTS, limits)]
    own = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    assert len({len(o) for o in own}) > 1  # rows really leave the batch at different steps
    checked, decoded = greedy_verified(model, PROMPTS, own, CAP, eos_token_id=eos, pad_token_id=PAD)
    assert checked == own and decoded == 0
    other = next(t for t in range(3, 60) if t != eos)
    wrong = [[eos], [other] * CAP, [other, eos], own[3], [other, other, eos]]  # complete, mostly not greedy
    checked, decoded = greedy_verified(model, PROMPTS, wrong, CAP, eos_token_id=eos, pad_token_id=PAD)
    assert checked == own and decoded >= 1


def check_draws_in_decoding(device: str, space: str) -> None:
    """Row r decodes under its own draw ks[r] exactly what that draw alone decodes, while finished
    rows leave the batch and departed rows are decoded on from the verification pass's cache."""
    model = _model(device)
    eos = _eos(model)
    reference = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    post = GaussianPosterior(model, 0.3, space, seed=2)
    ks = [4, 0, 9, 2, 7]
    with post.sample_rows(ks) as mdl:
        verified, _ = greedy_verified(mdl, PROMPTS, reference, CAP, eos_token_id=eos, pad_token_id=PAD)
    alone = []
    for p, k in zip(PROMPTS, ks):
        with post.sample(k) as mdl:
            alone.append(plain_greedy(mdl, p, CAP, eos))
    assert verified == alone
    assert verified != reference  # the draws changed some answers, so the check did work


def test_decoding_on_cuda_equals_plain_greedy_decoding():
    check_decoding("cuda")


@pytest.mark.parametrize("space", ["delta", "lora"])
def test_verified_decoding_under_per_row_draws_on_cuda(space):
    check_draws_in_decoding("cuda", space)


def test_lora_space_draws_on_cuda_are_the_cpu_draws():
    cpu = _model("cpu")
    gpu = copy.deepcopy(cpu).to("cuda")
    x = torch.randint(3, 60, (3, 8), generator=torch.Generator().manual_seed(0))
    ks = [7, 2, 11]
    outs = []
    for model in (cpu, gpu):
        post = GaussianPosterior(model, 0.05, "lora", seed=5)
        with torch.no_grad(), post.sample_rows(ks) as mdl:
            outs.append(mdl(x.to(model.device)).logits.cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        plain = cpu(x).logits
    assert (outs[0] - plain).abs().max() > 1e-3  # the draws did move the logits


CERT_TOL = {"abs": 2 / 48, "rel": 1e-4, "kl_sigma_rel": 1e-6}
"""A certificate on CUDA against the CPU one, same adapter and draws: every number within
2/48 + 1e-4·|cpu| (at most two of the 48 training examples' answers flipping at a near-tie of the
logits, in the point or the Monte-Carlo risk, and the bounds that follow from them); the KL and σ,
float64 functions of the same factors, within 1e-6 relative."""


def make_adapter(folder: Path) -> Path:
    """A LoRA adapter on the shipped base, its B factors moved off zero, saved with its init."""
    model = attach_lora(load_causal_lm(SHIPPED_BASE), r=4, alpha=8.0, seed=1)
    init = init_state_from_factors(lora_factors(model))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.002 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    save_init_state(init, folder)
    return folder


def certificate_numbers(device: str, adapter: Path) -> dict[str, float]:
    """Every number of the LoRA-space certificate of ``adapter`` computed with the model on ``device``."""
    train = [p.to_dict() for p in generate(48, [2, 3], split="train", seed=1)]
    test = [p.to_dict() for p in generate(48, [1, 4], split="test", seed=2)]
    bound = BoundConfig(sigmas=[0.02, 0.05], space="lora", loss="answer_error", mc_examples=48)
    model = attach_adapter(load_causal_lm(SHIPPED_BASE, device=device), adapter, base_name=str(SHIPPED_BASE))
    cert = certify(
        str(SHIPPED_BASE), model, train, test, bound=bound, tv=TVConfig(permutations=50),
        evaluation=EvalConfig(max_new_tokens=96, batch_size=48),
        settings=CertifySettings(init=adapter / INIT_FILE, seed=0),
    )  # fmt: skip
    return numbers(cert.to_dict())


def assert_same_certificate(cpu: dict[str, float], gpu: dict[str, float]) -> None:
    assert cpu.keys() == gpu.keys()
    for key, ref in cpu.items():
        tight = "kl" in key.lower() or "sigma" in key.lower()
        tol = CERT_TOL["kl_sigma_rel"] * abs(ref) if tight else CERT_TOL["abs"] + CERT_TOL["rel"] * abs(ref)
        assert abs(gpu[key] - ref) <= tol, (key, ref, gpu[key])


def test_certificate_on_cuda_equals_the_cpu_one(tmp_path):
    adapter = make_adapter(tmp_path / "adapter")
    assert_same_certificate(certificate_numbers("cpu", adapter), certificate_numbers("cuda", adapter))
