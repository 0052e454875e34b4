"""How long the greedy generations of posterior draws run, against the point model's, per σ.

    .venv/bin/python benchmarks/probe_draw_lengths.py [--cell base__sft__n512__medium__s0] [--prompts 64]

It trains the demo cell's adapter (the sweep's own recipe), then generates for every fifth test
prompt under one posterior draw per row (delta space) at σ = multiple × RMS of the adapted weights,
and prints the mean and longest generation and how many rows wrote the iGSM answer ("answer d").
A batch generates until its longest row ends, so long garbage rows set the cost of a batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from pacbayes_sft.estimators.lora import prior_centre_rms
from pacbayes_sft.estimators.posterior import GaussianPosterior
from pacbayes_sft.lm.scoring import generate_texts
from pacbayes_sft.sweep import load_config
from pacbayes_sft.sweep.cells import find_cell
from pacbayes_sft.sweep.runner import sweep_context
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import finetune


def answer_position(text: str) -> int | None:
    """The token index of the first "answer <digits>" (what the iGSM verifier reads), or None."""
    toks = text.split()
    return next((i for i in range(len(toks) - 1) if toks[i] == "answer" and toks[i + 1].isdigit()), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="base__sft__n512__medium__s0")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--multiples", default="0,0.05,0.2,0.8")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config("demo")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = sweep_context(cfg, Path(tmp))
        cell = find_cell(cfg, args.cell, "demo")
        base_dir, tok = ctx.bases[cell.base]
        train = ctx.task.train_examples(cell)
        sft = dataclasses.replace(cfg.sft, objective=cell.objective, seed=cell.seed, progress=False)
        model = finetune(load_causal_lm(base_dir), tok, [p.prompt for p in train], [p.response for p in train],
                         sft, Path(tmp) / "adapter").model.eval()  # fmt: skip
        rms = prior_centre_rms(model, "delta")
        prompts = [p.prompt for p in ctx.task.test_set[::5][: args.prompts]]
        print(f"{'multiple':>8} {'mean tokens':>11} {'longest':>7} {'answer found':>12}")
        for mult in (float(x) for x in args.multiples.split(",")):
            post = GaussianPosterior(model, mult * rms, "delta", seed=1)
            with post.sample_rows(list(range(len(prompts)))) as m:
                texts = generate_texts(m, tok, prompts, max_new_tokens=cfg.eval.max_new_tokens, keep_order=True)
            lens = [len(t.split()) for t in texts]
            found = sum(answer_position(t) is not None for t in texts)
            print(f"{mult:>8g} {sum(lens) / len(lens):>11.0f} {max(lens):>7} {found:>6} of {len(texts)}")


if __name__ == "__main__":
    main()
