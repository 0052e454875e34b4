"""Per-example posterior draws, batched per row against one example at a time (the baseline, run
beside it in the same process). Both compute the same draws (tests/test_posterior.py checks it).

    .venv/bin/python benchmarks/bench_mc_draws.py [--n 64] [--batch 64]

On the shipped base with a LoRA adapter (r = 8, q/v; B drawn at 0.05 so the adapter is not zero),
it times the Monte-Carlo training risk of one σ under answer_error (greedy generation, up to 160
new tokens) and under token_error (one teacher-forced pass), n examples of op 3-4, one draw each.
Time nothing while another process loads the machine.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from pacbayes_sft.certify import EvalConfig, example_losses, teacher_forced_losses
from pacbayes_sft.data.igsm import generate
from pacbayes_sft.data.igsm_verify import igsm_judge
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example
from pacbayes_sft.posteriors import GaussianPosterior
from pacbayes_sft.sweep.config import SHIPPED_BASE
from pacbayes_sft.training.models import attach_lora, load_causal_lm


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    tok = load_tokenizer(SHIPPED_BASE)
    model = attach_lora(load_causal_lm(SHIPPED_BASE), r=8, alpha=16.0, seed=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ex = generate(args.n, [3, 4], split="train", seed=3)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'loss':<12} {'one at a time (s)':>18} {'batched rows (s)':>17} {'speed-up':>9}  same estimate")
    for loss in ("answer_error", "token_error"):
        ls = example_losses(
            tok,
            ex,
            loss,
            judge=igsm_judge(7),
            evaluation=EvalConfig(max_new_tokens=160, batch_size=args.batch),
        )
        post = GaussianPosterior(model, 0.003, "delta", seed=1)
        if loss == "token_error":  # the sweep scores these one at a time; expose the batched form here
            ls = teacher_forced_losses(
                tok, [e.prompt for e in ex], [e.response for e in ex], loss, batch_size=args.batch, per_row_draws=True
            )
        batch = ls.batch
        t_seq, seq = _time(lambda p=post, ls=ls: mc_stochastic_risk_per_example(p, ls.example, ls.n, 1, 0.05))
        t_bat, bat = _time(
            lambda p=post, ls=ls, b=batch: mc_stochastic_risk_per_example(
                p, None, ls.n, 1, 0.05, batch_loss_fn=b, batch_size=args.batch
            )
        )
        same = abs(seq.mean - bat.mean) <= 2.0 / ls.n  # rounding may flip an argmax in a long generation
        print(
            f"{loss:<12} {t_seq:>18.2f} {t_bat:>17.2f} {t_seq / t_bat:>8.1f}x  {seq.mean:.3f} / {bat.mean:.3f} {same}"
        )


if __name__ == "__main__":
    main()
