"""Where one sweep cell's time goes: training, test generation, the certificate's parts (point
risk, σ_p choice, stage 2, TV proxy, Monte-Carlo draws), the stochastic test risk, the
label-free answers and writing the record.

    .venv/bin/python benchmarks/profile_cell.py [--config demo] [--cell base__sft__n512__medium__s0]

It runs the one cell into a temporary folder with the sweep's own code, timing each phase by
wrapping the functions the runner calls (nothing in the library is changed), and prints a table
of seconds and shares of the cell's wall time. Time nothing while another process loads the
machine: the shares are robust to that, the seconds are not.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from pacbayes_sft.certify import api as certify_api
from pacbayes_sft.certify import engine, two_stage
from pacbayes_sft.sweep import load_config, runner
from pacbayes_sft.sweep.cells import find_cell

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(module, name: str, label: str) -> None:
    """Replace ``module.name`` by a wrapper that adds its wall time to SPENT[label]."""
    fn = getattr(module, name)

    def wrapper(*args, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            SPENT[label] += time.perf_counter() - t0
            CALLS[label] += 1

    setattr(module, name, wrapper)


def instrument() -> None:
    timed(runner, "finetune", "training (LoRA SFT/DFT; the prior's half for the two-stage recipe)")
    timed(runner, "evaluate_test_items", "test set: teacher forcing + greedy generation")
    timed(runner, "stochastic_risk", "stochastic test risk (one draw per test item)")
    timed(runner, "collect_cell", "label-free answers and confidences")
    timed(runner, "write_record", "writing the record")
    timed(runner, "certify", "certificate (data-free recipe, all of it)")
    timed(runner, "_two_stage", "certificate (two-stage recipe, all of it)")
    timed(two_stage, "choose_prior_sigma", "certificate: sigma_p chosen on the prior's half")
    timed(two_stage, "refine_posterior", "certificate: stage 2, the PAC-Bayes objective")
    for mod in (certify_api, two_stage):
        timed(mod, "examples_tv_term", "certificate: TV proxy")
    timed(engine, "mc_stochastic_risk_per_example", "certificate: MC draws (every sigma)")
    timed(engine, "lora_kl", "certificate: KL")


@contextlib.contextmanager
def point_risk_timer():
    """The certificate's point-model risk on the training set: the first call of losses.point."""
    real = engine.certificate_core

    def core(model, losses, *args, **kw):
        t0 = time.perf_counter()
        losses.point(model)
        SPENT["certificate: point model's training risk"] += time.perf_counter() - t0
        return real(model, losses, *args, **kw)  # point() again reads the kept generations: verified, fast

    engine.certificate_core = certify_api.certificate_core = two_stage.certificate_core = core
    try:
        yield
    finally:
        engine.certificate_core = certify_api.certificate_core = two_stage.certificate_core = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="demo")
    ap.add_argument("--cell", default="base__sft__n512__medium__s0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    instrument()
    with tempfile.TemporaryDirectory() as tmp, point_risk_timer():
        out = Path(tmp)
        (out / "cells").mkdir()
        ctx = runner.sweep_context(cfg, out)
        cell = find_cell(cfg, args.cell, args.config)
        t0 = time.perf_counter()
        rec = runner.run_cell(ctx, cell, progress=False)
        runner.write_record(out, rec)
        wall = time.perf_counter() - t0
    print(f"cell {cell.id} ({args.config}), torch {torch.__version__}, {args.threads} threads, {platform.machine()}")
    print(f"{'phase':<52} {'seconds':>8} {'share':>6}")
    for label, s in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"{label:<52} {s:>8.1f} {s / wall:>6.0%}")
    print(f"{'cell wall time':<52} {wall:>8.1f} {1:>6.0%}")
    grid = rec.sigma_grid
    print(f"sigma grid: {len(grid)} settings x {grid[0]['mc_losses']} (example, draw) losses each")


if __name__ == "__main__":
    main()
