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
