"""The embedded default job: a real LoRA adapter on a tiny from-config model, and its bounds.

A tiny Llama (rotary positions) is built from config, a LoRA adapter is trained for a few
dozen steps on a sequence-reversal task (prompts of 3–5 digits), and the report computes the
KL over a σ grid, the Monte-Carlo stochastic training risk (token error rate, a loss in
[0, 1]), every PAC-Bayes bound, and the two-gap bound against a test set of longer prompts
(4–7 digits) whose TV proxy is the histogram TV of prompt length.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .adapter_report import adapter_bound_report
from .estimators.histogram_tv import histogram_tv
from .estimators.lora import INIT_FILE, init_state_from_factors, lora_factors
from .training.models import attach_lora, tiny_causal_lm
from .training.teacher_forcing import teacher_forced_stats

PAD, BOS, EOS, SEP, DIGIT0 = 0, 1, 2, 3, 4
VOCAB = 16


def reversal_examples(n: int, lengths: tuple[int, int], seed: int) -> list[tuple[list[int], list[int]]]:
    """n (prompt, response) pairs: prompt = BOS digits SEP, response = reversed digits EOS."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(lengths[0], lengths[1] + 1))
        digits = (DIGIT0 + rng.integers(0, 10, size=k)).tolist()
        out.append(([BOS, *digits, SEP], [*digits[::-1], EOS]))
    return out


def collate(examples: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input_ids, attention_mask and response_mask."""
    width = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), width), PAD, dtype=torch.long)
    att = torch.zeros_like(ids)
    resp = torch.zeros_like(ids)
    for i, (p, r) in enumerate(examples):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        att[i, : len(seq)] = 1
        resp[i, len(p) : len(seq)] = 1
    return ids, att, resp


def run_demo(
    out_dir: str | Path,
    *,
    n: int = 512,
    steps: int = 150,
    seed: int = 0,
    m: int = 32,
    sigmas: tuple[float, ...] = (3e-3, 1e-2, 2e-2, 4e-2),
    delta: float = 0.05,
) -> dict:
    """Train the demo adapter, compute the bound report, write ``report.json``; return it."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = reversal_examples(n, (3, 5), seed)
    test = reversal_examples(512, (4, 7), seed + 1)
    base = tiny_causal_lm("llama", VOCAB, seed=seed, hidden=64, layers=2, heads=4, max_positions=64)
    model = attach_lora(base, r=8, alpha=16.0, seed=seed)
    init_state = init_state_from_factors(lora_factors(model))

    ids, att, resp = collate(train)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (32,), generator=gen)
        labels = ids[idx].masked_fill(resp[idx] == 0, -100)
        loss = model(input_ids=ids[idx], attention_mask=att[idx], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out / "adapter")
    from safetensors.torch import save_file

    save_file(init_state, str(out / "adapter" / INIT_FILE))

    def train_risk(mdl: torch.nn.Module) -> float:
        return float(teacher_forced_stats(mdl, ids, resp, att).token_error.mean())

    test_ids, test_att, test_resp = collate(test)
    test_risk = float(teacher_forced_stats(model, test_ids, test_resp, test_att).token_error.mean())
    tv = histogram_tv([len(p) for p, _ in train], [len(p) for p, _ in test])
    report = adapter_bound_report(model, train_risk, n, sigmas=sigmas, tv=tv, delta=delta, m=m, seed=seed)
    doc = report.to_dict() | {
        "task": "sequence reversal; train prompts of 3-5 digits, test prompts of 4-7 digits",
        "loss": "token error rate (teacher-forced argmax), in [0, 1]",
        "model": "tiny Llama from config (hidden 64, 2 layers), LoRA r=8 alpha=16 on attention+MLP",
        "n": n,
        "point_train_risk": train_risk(model),
        "measured_test_risk": test_risk,
        "tv_proxy": {"value": tv, "kind": "histogram TV of prompt length (a lower proxy of the true TV)"},
        "certified": {"pac_bayes_terms": True, "g_ext": False},
        "seconds": time.perf_counter() - t0,
    }
    (out / "report.json").write_text(json.dumps(doc, indent=2))
    return doc
