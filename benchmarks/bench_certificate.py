"""The certificate of one sweep cell, three ways, on the same trained adapters:

    .venv/bin/python benchmarks/bench_certificate.py [--cell base__sft__n512__medium__s0]

- ``grid, generate``: the data-free recipe (the demo's 3-point σ grid, one draw per example,
  ``mc_examples`` losses per σ) with decoding by ``model.generate`` — the baseline;
- ``grid, fast decoding``: the same certificate with the toolkit's exact decoders (finished rows
  leave the batch; draws verified against the mean's answers): equal numbers, less time;
- ``two-stage``: the sweep's default certificate (prior on the first half, σ_p chosen there, the
  posterior refined on the other half, one σ evaluated), its stages 2–4 timed.

Each also computes the stochastic test risk at its σ (the quantity the bound is about). The cell's
test evaluation (the point model's test answers) is computed by every recipe and is not timed;
the fast recipes verify their test draws against it, as the sweep's cell does. Training is timed
apart: SFT on all of S for the grid recipe, on the first half for the two-stage one.
Run it on quiet cores: the ratios are against the baseline measured beside them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from _demo_cell import demo_cell, train_adapter

import pacbayes_sft.lm.decoding as decoding_mod
from pacbayes_sft.certify import CertifySettings, certify, example_losses, stochastic_risk
from pacbayes_sft.certify.two_stage import certify_two_stage


def _generate(mdl, prefixes, limits, *, eos_token_id, pad_token_id, rows=None):
    """``model.generate`` on the batch, cut at each row's <eos>: the baseline decoder."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_token_id)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prefixes):
        ids[i, width - len(p) :], att[i, width - len(p) :] = torch.tensor(p), 1
    with torch.no_grad():
        gen = mdl.generate(input_ids=ids, attention_mask=att, max_new_tokens=max(limits), do_sample=False,
                           pad_token_id=pad_token_id, eos_token_id=eos_token_id)[:, width:].tolist()  # fmt: skip
    return [g[: g.index(eos_token_id) + 1] if eos_token_id in g else g for g in gen]


@contextmanager
def baseline_decoding():
    """Every greedy generation by ``model.generate``, no verification: the decoding before this change."""
    saved = decoding_mod.greedy_continue, decoding_mod.greedy_verified
    decoding_mod.greedy_continue = _generate
    def generate_all(m, ps, refs, cap, *, eos_token_id, pad_token_id, batch_size=None, rows=None):
        """Every row by ``model.generate`` (no check), in passes of ``batch_size`` rows."""
        step = batch_size or len(ps)
        out = []
        for s in range(0, len(ps), step):
            out += _generate(m, ps[s : s + step], [cap] * len(ps[s : s + step]), eos_token_id=eos_token_id,
                             pad_token_id=pad_token_id)  # fmt: skip
        return out, len(ps)

    decoding_mod.greedy_verified = generate_all
    try:
        yield
    finally:
        decoding_mod.greedy_continue, decoding_mod.greedy_verified = saved


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="base__sft__n512__medium__s0")
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, ctx, cell, tok, train = demo_cell(args.cell, Path(tmp))
        base_dir, test, bound = ctx.bases[cell.base][0], ctx.task.test_set, cfg.bound
        full, t_full = timed(lambda: train_adapter(ctx, cell, train, Path(tmp) / "full"))
        n_p = cfg.prior.split(len(train))
        half, t_half = timed(lambda: train_adapter(ctx, cell, train[:n_p], Path(tmp) / "half"))
        kw = {"bound": bound, "tv": cfg.tv, "evaluation": cfg.eval,
              "settings": CertifySettings(judge=ctx.task.judge, tokenizer=tok, seed=cell.seed)}  # fmt: skip

        def test_set(model):
            """The cell's test evaluation (the point model's answers on the test set): computed in
            every recipe, outside the certificate, so it is not timed; the stochastic test risk
            verifies its draws against these answers, as the sweep's cell does."""
            losses = example_losses(tok, test, bound.loss, judge=ctx.task.judge, evaluation=cfg.eval)
            losses.point(model)
            return losses

        def grid(test_losses):
            t = time.perf_counter()
            cert = certify(base_dir, full.model, train, test, **kw)
            stoch = stochastic_risk(full.model, test_losses, cert.sigma.value, bound.space, seed=1)
            return cert, stoch, time.perf_counter() - t

        def two_stage():
            t = time.perf_counter()
            cert, state = certify_two_stage(
                half.model, tok, train, test, prior=cfg.prior, bound=bound, tv=cfg.tv, evaluation=cfg.eval,
                settings=CertifySettings(
                    judge=ctx.task.judge, init=Path(tmp) / "half" / "lora_init.safetensors", seed=cell.seed
                ),
            )  # fmt: skip
            spent = time.perf_counter() - t
            test_losses = test_set(half.model)  # half.model is now Q, the cell's model
            t = time.perf_counter()
            stoch = stochastic_risk(half.model, test_losses, state["scales"], "lora", seed=1)
            return cert, stoch, spent + time.perf_counter() - t

        full_test = test_set(full.model)
        with baseline_decoding():
            c0, s0, t0 = grid(full_test)
        c1, s1, t1 = grid(full_test)
        c2, s2, t2 = two_stage()
    same = (c0.empirical_risk.mc_mean, c0.total, s0.mean) == (c1.empirical_risk.mc_mean, c1.total, s1.mean)
    print(f"cell {args.cell}; training: {t_full:.1f} s on all {len(train)} examples, {t_half:.1f} s on the first {n_p}")
    print(f"{'certificate':<24} {'seconds':>8} {'x baseline':>10} {'U_MC+G_gen':>10} {'stoch. test':>11}")
    for name, t, c, s in (("grid, generate", t0, c0, s0), ("grid, fast decoding", t1, c1, s1), ("two-stage", t2, c2, s2)):
        print(f"{name:<24} {t:>8.1f} {t0 / t:>10.2f} {c.empirical_risk.mc_upper + c.g_gen.seeger:>10.3f} {s.mean:>11.3f}")
    print(f"grid numbers identical under both decoders: {same}")
    print(f"whole cell (training + certificate): grid + generate {t_full + t0:.1f} s, two-stage {t_half + t2:.1f} s "
          f"({(t_full + t0) / (t_half + t2):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
