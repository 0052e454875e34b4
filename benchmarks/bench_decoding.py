"""The Monte-Carlo answer_error term at equal draws: plain ``model.generate`` against the exact
faster decoders (finished rows leave the batch; each draw verified against the mean's answer).

    .venv/bin/python benchmarks/bench_decoding.py [--cell base__sft__n512__medium__s0] [--examples 128]

It trains the demo cell's adapter (the sweep's recipe), then, for each σ multiple, scores
``--examples`` training examples under one posterior draw each (delta space, the demo's
per-example scheme) three ways on the same draws, and checks the losses are identical:

- ``generate``: ``model.generate`` (transformers, KV cache) on each batch of rows — the baseline;
- ``drop rows``: :func:`~pacbayes_sft.lm.decoding.greedy_continue`;
- ``verified``: drop rows + the mean's greedy answer checked by one teacher-forced pass
  (what the toolkit runs once the point risk is known).

Run it on quiet cores: the ratios are against the baseline measured beside them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _demo_cell import demo_cell, train_adapter

from pacbayes_sft.certify.losses import answer_losses
from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example
from pacbayes_sft.lm.encoding import collate_prompts_left, encode
from pacbayes_sft.posteriors import GaussianPosterior, prior_centre_rms


def generate_losses(tok, examples, judge, max_new_tokens: int):
    """answer_error through ``model.generate`` on the batch as given: the baseline."""
    enc = encode(tok, [e.prompt for e in examples], ["x"] * len(examples))

    def batch(mdl, idx):
        b = collate_prompts_left([enc[i] for i in idx], tok.pad_token_id)
        with torch.no_grad():
            gen = mdl.generate(
                **b, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )  # fmt: skip
        texts = [tok.decode(g, skip_special_tokens=True) for g in gen[:, b["input_ids"].shape[1] :]]
        return [0.0 if judge(examples[i], t) else 1.0 for i, t in zip(idx, texts)]

    return batch


def timed_mc(post, batch, n: int, batch_size: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    mc = mc_stochastic_risk_per_example(post, None, n, 1, 0.05, batch_loss_fn=batch, batch_size=batch_size)
    return time.perf_counter() - start, mc.per_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="base__sft__n512__medium__s0")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--multiples", default="0.02,0.05,0.2,0.8")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, ctx, cell, tok, train = demo_cell(args.cell, Path(tmp))
        model = train_adapter(ctx, cell, train, Path(tmp) / "adapter").model
        examples = train[: args.examples]
        rms = prior_centre_rms(model, "delta")
        cap, bs = cfg.eval.max_new_tokens, cfg.eval.batch_size
        print(f"{len(examples)} examples, one draw each, batch {bs}, max_new_tokens {cap}, 2 threads")
        print(f"{'multiple':>8} {'generate s':>10} {'drop rows s':>11} {'verified s':>10} {'rows decoded':>12}"
              f" {'x drop':>6} {'x verified':>10} {'identical':>9}")  # fmt: skip
        for mult in (float(x) for x in args.multiples.split(",")):
            post = GaussianPosterior(model, mult * rms, "delta", seed=1)
            t_gen, l_gen = timed_mc(post, generate_losses(tok, examples, ctx.task.judge, cap), len(examples), bs)
            plain = answer_losses(tok, examples, ctx.task.judge, max_new_tokens=cap, batch_size=bs)
            t_drop, l_drop = timed_mc(post, plain.batch, len(examples), bs)
            verified = answer_losses(tok, examples, ctx.task.judge, max_new_tokens=cap, batch_size=bs)
            verified.point(model)  # done once per cell anyway: the point training risk
            t_ver, l_ver = timed_mc(post, verified.batch, len(examples), bs)
            same = l_gen == l_drop == l_ver
            print(f"{mult:>8g} {t_gen:>10.2f} {t_drop:>11.2f} {t_ver:>10.2f} {verified.stats['rows_decoded']:>7} of"
                  f" {len(examples):<3} {t_gen / t_drop:>6.2f} {t_gen / t_ver:>10.2f} {same!s:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
