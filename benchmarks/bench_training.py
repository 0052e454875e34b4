"""Benchmarks for evaluation and LoRA training; ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_training.py --base pacbayes_sft/assets/base_igsm

1. Teacher-forced exact match (one forward pass per batch) against batched greedy ``generate()``
   with a KV cache on the same 1,000 held-out problems (op 1–8), and their agreement.
2. LoRA SFT tokens/s with length-grouped batches against plain (randomly ordered) padded batches,
   same data, same steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.training.evaluate import greedy_generate, teacher_forced_metrics
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import SFTConfig, finetune


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--train-n", type=int, default=512)
    args = ap.parse_args()
    print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = load_causal_lm(args.base)
    tok = load_tokenizer(args.base)
    probs = generate(args.n, list(range(1, 9)), split="test", seed=99)
    prompts, refs = [p.prompt for p in probs], [p.response for p in probs]
    t0 = time.perf_counter()
    em = teacher_forced_metrics(model, tok, prompts, refs, batch_size=64)["exact_match"]
    t_tf = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = greedy_generate(model, tok, prompts, batch_size=64, max_new_tokens=max(p.cot_tokens for p in probs) + 2)
    t_gen = time.perf_counter() - t0
    agree = sum(bool(e) == (o.strip() == r) for e, o, r in zip(em, outs, refs)) / len(refs)
    print(
        f"exact match on {len(refs)} problems: teacher-forced {t_tf:.1f} s vs batched generate() {t_gen:.1f} s "
        f"-> {t_gen / t_tf:.1f}x faster; agreement {agree:.3f}; EM rate {sum(em) / len(em):.3f}"
    )

    train = generate(args.train_n, list(range(1, 9)), split="train", seed=5)
    res = {}
    for grouped in (True, False):
        with tempfile.TemporaryDirectory() as d:
            cfg = SFTConfig(max_steps=60, batch_size=16, group_by_length=grouped, progress=False, logging_steps=1000)
            r = finetune(load_causal_lm(args.base), tok, [p.prompt for p in train], [p.response for p in train], cfg, d)
            res[grouped] = r.log
    g, p = res[True], res[False]
    print(
        f"LoRA SFT, 60 steps of 16 (op 1-8): length-grouped {g['response_tokens_per_s']:.0f} response tokens/s "
        f"({g['seconds']:.1f} s) vs random padded batches {p['response_tokens_per_s']:.0f} ({p['seconds']:.1f} s) "
        f"-> {p['seconds'] / g['seconds']:.2f}x faster"
    )


if __name__ == "__main__":
    main()
