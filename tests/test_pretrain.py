"""Pretraining from scratch and continuing from a checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.pretrain import PretrainConfig, pretrain

TINY = {"hidden": 32, "layers": 1, "heads": 4, "intermediate": 64, "batch_size": 8, "warmup": 5, "max_minutes": 2.0}


def test_pretrain_lowers_loss_and_saves_a_loadable_checkpoint(tmp_path):
    meta = pretrain(PretrainConfig(ops=(1, 2), steps=200, lr=3e-3, **TINY), tmp_path / "a", log=lambda s: None)
    hist = meta["history"]
    assert len(hist) == 2 and hist[-1]["loss"] < hist[0]["loss"]
    assert json.loads((tmp_path / "a" / "pretrain.json").read_text())["steps"] == 200
    model, tok = load_causal_lm(tmp_path / "a"), load_tokenizer(tmp_path / "a")
    assert model.config.vocab_size == len(tok)
    assert (tmp_path / "a" / "model.safetensors").is_file()


def test_init_from_continues_from_the_saved_weights(tmp_path):
    pretrain(PretrainConfig(ops=(1,), steps=3, lr=1e-3, **TINY), tmp_path / "a", log=lambda s: None)
    # One step at a negligible learning rate leaves the weights where they were.
    pretrain(
        PretrainConfig(ops=(1,), steps=1, lr=1e-12, weight_decay=0.0, init_from=str(tmp_path / "a"), **TINY),
        tmp_path / "b",
        log=lambda s: None,
    )
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-8)
    with pytest.raises(ValueError, match="vocabulary"):
        pretrain(PretrainConfig(ops=(1,), steps=1, modulus=11, init_from=str(tmp_path / "a"), **TINY), tmp_path / "c")


@pytest.mark.parametrize("init_from", ["", "runs/some_base"])
def test_recorded_command_rebuilds_the_same_config(init_from):
    from pacbayes_sft.cli import build_parser, pretrain_config_from_args
    from pacbayes_sft.training.pretrain import pretrain_command

    cfg = PretrainConfig(
        ops=(1, 3),
        hidden=96,
        heads=8,
        lr=1.5e-3,
        warmup=50,
        weight_decay=0.05,
        seed=7,
        threads=2,
        checkpoint_minutes=3.0,
        max_minutes=12.5,
        init_from=init_from,
        arch="gpt2",
        prompt_loss=0.25,
        recall_fraction=0.3,
        recall_max=9,
        position_offset=64,
    )
    argv = pretrain_command(cfg, out="runs/x").split()
    assert argv[:2] == ["pacbayes-sft", "pretrain"]
    args = build_parser().parse_args(argv[1:])
    assert pretrain_config_from_args(args) == cfg
    assert args.out == "runs/x"


def test_loss_weights_prompt_tokens_as_configured():
    from pacbayes_sft.data import generate
    from pacbayes_sft.training.encoding import collate, encode
    from pacbayes_sft.training.models import build_model, tiny_config
    from pacbayes_sft.training.pretrain import _loss

    tok = load_tokenizer_for_test()
    probs = generate(4, [1, 2], split="train", seed=3)
    batch = collate(encode(tok, [p.prompt for p in probs], [p.response for p in probs]), tok.pad_token_id)
    model = build_model(tiny_config("llama", len(tok), hidden=32, layers=1, max_positions=512), seed=0).eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
        resp_ce = prompt_ce = 0.0
        n_resp = 0
        for i in range(len(probs)):
            n = int(batch["attention_mask"][i].sum())
            for t in range(1, n):  # token t predicted at t - 1; <bos> (t = 0) is never a target
                ce = -float(logp[i, t - 1, batch["input_ids"][i, t]])
                if batch["response_mask"][i, t]:
                    resp_ce, n_resp = resp_ce + ce, n_resp + 1
                else:
                    prompt_ce += ce
        for w in (0.0, 0.5):
            got = float(_loss(model, batch, PretrainConfig(prompt_loss=w), torch.Generator()))
            assert got == pytest.approx((resp_ce + w * prompt_ce) / n_resp, rel=1e-5)
        # Response-only loss equals the model's own label-masked loss.
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        assert float(_loss(model, batch, PretrainConfig(), torch.Generator())) == pytest.approx(float(ref), rel=1e-5)


def test_gpt2_base_trains_at_random_position_offsets(tmp_path):
    meta = pretrain(
        PretrainConfig(arch="gpt2", position_offset=100, ops=(1,), steps=200, lr=3e-3, recall_fraction=0.3, **TINY),
        tmp_path / "g",
        log=lambda s: None,
    )
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    model = load_causal_lm(tmp_path / "g")
    assert model.config.model_type == "gpt2"
    bads = ((dict(arch="rnn"), "arch"), (dict(prompt_loss=-1.0), "prompt_loss"), (dict(recall_fraction=1.0), "recall"))
    for bad, match in bads:
        with pytest.raises(ValueError, match=match):
            pretrain(PretrainConfig(ops=(1,), steps=1, **(TINY | bad)), tmp_path / "x", log=lambda s: None)


def load_tokenizer_for_test():
    from pacbayes_sft.data.tokenizer import igsm_tokenizer

    return igsm_tokenizer()
