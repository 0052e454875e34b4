"""Data-parallel LoRA training: two CPU processes (torchrun, gloo) run the same code as one, and
the adapter they save loads and is certified like a single-process one."""

import json
import os
import socket
import subprocess
import sys

import pytest

from pacbayes_sft.certify import BoundConfig, TVConfig, certify
from pacbayes_sft.cli import main
from pacbayes_sft.data.igsm import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.training.models import build_model, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_two_processes_train_an_adapter_certified_like_one(tmp_path):
    base, data = tmp_path / "base", tmp_path / "train.jsonl"
    tok = igsm_tokenizer(7)
    build_model(
        tiny_config("llama", len(tok), hidden=32, layers=1, heads=4, max_positions=512), seed=0
    ).save_pretrained(base)
    tok.save_pretrained(base)
    train = generate(16, [1, 2], split="train", seed=0)
    data.write_text("".join(json.dumps({"prompt": p.prompt, "response": p.response}) + "\n" for p in train))
    args = ["finetune", "--base", str(base), "--train", str(data), "--max-steps", "3", "--batch-size", "4", "--quiet"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={_free_port()}"]
    run = subprocess.run(
        [*launch, "-m", "pacbayes_sft.cli", *args, "--out", str(tmp_path / "a2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    log2 = json.loads((tmp_path / "a2" / "training.json").read_text())
    assert log2["world_size"] == 2 and log2["steps"] == 3
    assert main([*args, "--out", str(tmp_path / "a1")]) == 0
    assert json.loads((tmp_path / "a1" / "training.json").read_text())["world_size"] == 1
    bound = BoundConfig(sigma_multiples=[0.1, 1.0], mc_examples=None, loss="token_error")
    tv = TVConfig(permutations=10, features="structure")
    certs = [certify(base, tmp_path / a, train, train[:8], bound=bound, tv=tv) for a in ("a1", "a2")]
    for c in certs:
        assert c.n == 16 and c.loss == "token_error" and 0.0 <= c.total <= 2.0 and c.kl.value_nats > 0
    assert certs[0].kl.value_nats != certs[1].kl.value_nats  # two data orders, two different adapters
