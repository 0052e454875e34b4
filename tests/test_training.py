"""LoRA SFT/DFT training, the DFT loss, and teacher-forced exact match vs greedy generation."""

import math

import pytest
import torch
from peft import PeftModel

from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.training.evaluate import evaluate_slices, greedy_generate, teacher_forced_metrics
from pacbayes_sft.training.models import build_model, tiny_config
from pacbayes_sft.training.sft import SFTConfig, finetune, sft_loss

TOK = igsm_tokenizer()


def test_dft_loss_hand_computed():
    # One sequence, vocabulary 3, two response tokens (positions 1 and 2 predicted from 0 and 1).
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    p1 = math.exp(2) / (math.exp(2) + 2)  # p(token 0 | position 0)
    p2 = math.e / (math.e + 2)  # p(token 1 | position 1)
    ce = (-math.log(p1) - math.log(p2)) / 2
    dft = (p1 * -math.log(p1) + p2 * -math.log(p2)) / 2
    loss_sft, plain = sft_loss(logits, labels, "sft")
    loss_dft, plain2 = sft_loss(logits, labels, "dft")
    assert float(loss_sft) == pytest.approx(ce, rel=1e-6)
    assert float(loss_dft) == pytest.approx(dft, rel=1e-6)
    assert float(plain) == float(plain2) == pytest.approx(ce, rel=1e-6)


def test_dft_gradient_is_probability_weighted_sft_gradient():
    # Single response token: ∇L_dft = sg(p)·∇L_sft exactly.
    torch.manual_seed(0)
    base = torch.randn(1, 2, 5)
    labels = torch.tensor([[-100, 3]])
    g = {}
    for obj in ("sft", "dft"):
        x = base.clone().requires_grad_(True)
        sft_loss(x, labels, obj)[0].backward()
        g[obj] = x.grad
    p = torch.softmax(base[0, 0], -1)[3]
    torch.testing.assert_close(g["dft"], p * g["sft"])
    assert not torch.allclose(g["dft"], g["sft"])


def test_sft_loss_needs_response_tokens():
    with pytest.raises(ValueError, match="response"):
        sft_loss(torch.zeros(1, 3, 4), torch.full((1, 3), -100))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("objective", ["sft", "dft"])
def test_lora_run_lowers_loss_and_reloads(arch, objective, tmp_path):
    probs = generate(48, [1, 2], split="train", seed=2)
    cfg_model = tiny_config(arch, len(TOK), hidden=32, layers=2, max_positions=256)
    base = build_model(cfg_model, seed=0)
    before = teacher_forced_metrics(base, TOK, [p.prompt for p in probs], [p.response for p in probs])["nll"]
    res = finetune(
        base,
        TOK,
        [p.prompt for p in probs],
        [p.response for p in probs],
        SFTConfig(objective=objective, max_steps=30, batch_size=8, lr=1e-2, logging_steps=10, progress=False),
        tmp_path / "adapter",
    )
    after = teacher_forced_metrics(res.model, TOK, [p.prompt for p in probs], [p.response for p in probs])["nll"]
    assert sum(after) < sum(before)
    hist = [h["ce"] for h in res.log["history"] if "ce" in h]
    assert hist[-1] < hist[0]
    reloaded = PeftModel.from_pretrained(build_model(cfg_model, seed=0), str(tmp_path / "adapter")).eval()
    x = torch.randint(4, len(TOK), (2, 12))
    with torch.no_grad():
        assert torch.equal(res.model(x).logits, reloaded(x).logits)
    assert (tmp_path / "adapter" / "lora_init.safetensors").is_file()
    assert res.log["tokens_per_s"] > 0


def test_teacher_forced_exact_match_agrees_with_greedy(tmp_path):
    # Overfit a tiny model on a few problems so that some, not all, references are reproduced.
    torch.manual_seed(0)
    probs = generate(24, [1], split="train", seed=5)
    model = build_model(tiny_config("llama", len(TOK), hidden=64, layers=2, max_positions=256), seed=1)
    from pacbayes_sft.training.encoding import collate, encode

    batch = collate(encode(TOK, [p.prompt for p in probs], [p.response for p in probs]), TOK.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    prompts, refs = [p.prompt for p in probs], [p.response for p in probs]
    em = teacher_forced_metrics(model, TOK, prompts, refs)["exact_match"]
    outs = greedy_generate(model, TOK, prompts, max_new_tokens=40)
    reproduced = [o.strip() == r for o, r in zip(outs, refs)]
    assert any(reproduced)
    assert [bool(e) for e in em] == reproduced


def test_evaluate_slices_rows():
    from pacbayes_sft.data import verify

    model = build_model(tiny_config("qwen2", len(TOK), hidden=32, layers=1, max_positions=256), seed=0)
    slices = {1: generate(4, 1, seed=1), 3: generate(4, 3, seed=1)}
    rows = evaluate_slices(
        model, TOK, slices, model_name="base", judge=lambda e, o: verify(e.prompt, o).answer_correct, max_new_tokens=8
    )
    metrics = {(r["slice"], r["metric"]) for r in rows}
    assert (3, "answer_accuracy") in metrics and (1, "exact_match") in metrics
    for r in rows:
        assert r["n_examples"] == 4 and math.isfinite(r["value"])
        if r["metric"] in ("exact_match", "token_error", "answer_accuracy"):
            assert 0.0 <= r["value"] <= 1.0


def test_role_errors_add_up_to_the_token_errors():
    from pacbayes_sft.data.igsm import response_roles
    from pacbayes_sft.training.evaluate import teacher_forced_role_errors

    probs = generate(12, [1, 3], split="test", seed=2)
    model = build_model(tiny_config("llama", len(TOK), hidden=32, layers=1, max_positions=256), seed=3).eval()
    prompts, refs = [p.prompt for p in probs], [p.response for p in probs]
    per_role = teacher_forced_role_errors(model, TOK, prompts, refs, [response_roles(r) for r in refs], batch_size=5)
    tf = teacher_forced_metrics(model, TOK, prompts, refs)
    n_tok = [len(r.split()) + 1 for r in refs]  # + <eos>
    assert sum(c for _, c in per_role.values()) == sum(n_tok)
    assert sum(e for e, _ in per_role.values()) == round(sum(t * n for t, n in zip(tf["token_error"], n_tok)))
    assert per_role["eos"][1] == len(refs) and per_role["schedule"][1] == sum(p.op for p in probs)
    with pytest.raises(ValueError, match=r"roles\[0\]"):
        teacher_forced_role_errors(model, TOK, prompts[:1], refs[:1], [["format"]])
