"""How long the greedy generations of posterior draws run, against the point model's, per σ.

    .venv/bin/python benchmarks/probe_draw_lengths.py [--cell base__sft__n512__medium__s0] [--prompts 64]

It trains the demo cell's adapter (the sweep's own recipe), then generates for every fifth test
prompt under one posterior draw per row (delta space) at σ = multiple × RMS of the adapted weights,
and prints the mean and longest generation and how many rows wrote the iGSM answer ("answer d").
A batch generates until its longest row ends, so long garbage rows set the cost of a batch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _demo_cell import demo_cell, train_adapter

from pacbayes_sft.lm.scoring import generate_texts
from pacbayes_sft.posteriors import GaussianPosterior, prior_centre_rms


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
    with tempfile.TemporaryDirectory() as tmp:
        cfg, ctx, cell, tok, train = demo_cell(args.cell, Path(tmp))
        model = train_adapter(ctx, cell, train, Path(tmp) / "adapter").model
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
