"""A few cells of a scaled configuration, as a start on the ``paper`` study on one GPU: a larger
base pretrained here for part of the time budget, then the paper config's harder buckets at one
budget, cell by cell while time is left.

    python experiments/gpu_scaled.py --out DIR --budget-s 180 [--size paper|tiny]

``--size paper`` pretrains a GPT-2-small-sized Llama (768 wide, 12 blocks, 12 heads, MLP 3072:
the shape ``experiments/configs/paper.yaml`` expects) on op 1–8 for min(2 min, 40% of the budget);
a base trained for minutes is far from the paper's (hours), so the cells measure what a scaled
cell costs on the GPU (training, decoding up to 400 tokens, the certificate), not the study's
answer. ``--size tiny`` (the CPU dry run of ``gpu_check.sh``) is a 2-block, 64-wide model, one
cell and a handful of test problems. Everything else is paper.yaml's: its buckets op 5–8 and
op 9–12, LoRA r = 16, token_error bound, TV settings, evaluation batch and length; only the
label-free answers are not collected (as in the demo: on the CPU they cost several times the rest
of a cell).

Writes DIR/base (the pretrained model), DIR/config.yaml, DIR/run (a sweep folder: cells/,
adapters/, sweep.json) and DIR/summary.json (pretraining and each finished cell's seconds, stages
and terms), rewritten after every cell so a run cut short keeps what finished. A cell starts only
while the time left is at least 1.5 × the longest cell so far (30 s before the first).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "configs" / "paper.yaml"

SIZES = {
    "paper": {
        "model": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072},
        "budgets": [1000],
        "buckets": ["op5-8", "op9-12"],
        "test": {"ops": [2, 6, 10, 14], "n_per_op": 50},
        "pretrain_cap_min": 2.0,
    },
    "tiny": {
        "model": {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128},
        "budgets": [32],
        "buckets": ["op5-8"],
        "test": {"ops": [2, 6], "n_per_op": 4},
        "pretrain_cap_min": 0.1,
    },
}
PRETRAIN_OPS = (1, 2, 3, 4, 5, 6, 7, 8)
FIRST_CELL_S = 30.0
"""Seconds that must be left to start the first cell (later: 1.5 × the longest cell so far)."""


def scaled_config(size: str, base_dir: Path) -> dict:
    """paper.yaml with one base (``base_dir``), one seed, SFT only, and ``size``'s budgets,
    buckets and test set."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    spec = SIZES[size]
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["name"] = f"gpu_scaled_{size}"
    cfg["bases"] = [{"name": "scaled", "path": str(base_dir)}]
    cfg["budgets"] = list(spec["budgets"])
    cfg["buckets"] = {k: cfg["buckets"][k] for k in spec["buckets"]}
    cfg["seeds"], cfg["objectives"] = [0], ["sft"]
    cfg["test"] = cfg["test"] | spec["test"]
    cfg["label_free"] = {"source": 0}  # as in the demo: the label-free answers cost more than the rest of a cell
    return cfg


def pretrain_base(size: str, out: Path, minutes: float) -> dict:
    """Pretrain the scaled base for ``minutes`` (on the GPU when there is one); its metadata."""
    from pacbayes_sft.training.pretrain import PretrainConfig, pretrain

    if not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}")
    cfg = PretrainConfig(ops=PRETRAIN_OPS, max_minutes=minutes, checkpoint_minutes=1e9, **SIZES[size]["model"])
    log_path = out.parent / "pretrain.log"
    with log_path.open("w") as fh:
        meta = pretrain(cfg, out, log=lambda line: print(line, file=fh, flush=True))
    return {k: meta[k] for k in meta if k not in ("history",)}


def _summary_row(rec) -> dict:
    keep = ("point_train_risk", "mc_risk_upper", "kl", "tv", "g_gen", "total", "stoch_test_risk")
    return {
        "cell": rec.id,
        "seconds": rec.seconds,
        "stage_seconds": rec.training.get("stage_seconds", {}),
        "terms": {k: rec.terms.get(k) for k in keep},
    }


def run_cells(cfg: dict, run_dir: Path, deadline: float, summary: dict, write) -> None:
    """Each cell of ``cfg`` in grid order while time is left, straight through the runner (no base
    evaluation: the runner evaluates a base on the CPU, which would only time the CPU here)."""
    from pacbayes_sft.sweep import normalise_config
    from pacbayes_sft.sweep.cells import cells_of
    from pacbayes_sft.sweep.runner import run_cell, sweep_context, write_record
    from pacbayes_sft.sweep.store import claim_folder

    config = normalise_config(cfg)
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    state = claim_folder(run_dir, config)
    ctx = sweep_context(config, run_dir)
    longest = 0.0
    for cell in cells_of(config):
        left = deadline - time.monotonic()
        if left < max(FIRST_CELL_S, 1.5 * longest):
            summary["not_run"].append(cell.id)
            continue
        rec = run_cell(ctx, cell, progress=False).stamped(state.stamp(cell.base))
        write_record(run_dir, rec)
        longest = max(longest, rec.seconds or 0.0)
        summary["cells"].append(_summary_row(rec))
        write()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--budget-s", type=float, required=True, help="wall seconds this step may take in all")
    ap.add_argument("--size", default="paper", choices=sorted(SIZES))
    args = ap.parse_args(argv)
    if not args.budget_s > 0:
        raise ValueError(f"--budget-s must be > 0, got {args.budget_s!r}")
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    summary: dict = {"size": args.size, "device": device, "budget_s": args.budget_s, "cells": [], "not_run": []}

    def write() -> None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))

    minutes = min(SIZES[args.size]["pretrain_cap_min"], 0.4 * args.budget_s / 60)
    t0 = time.perf_counter()
    summary["pretrain"] = pretrain_base(args.size, out / "base", minutes)
    summary["pretrain_wall_s"] = time.perf_counter() - t0
    cfg = scaled_config(args.size, out / "base")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    write()
    run_cells(cfg, out / "run", deadline, summary, write)
    write()
    print(json.dumps({k: summary[k] for k in ("size", "device", "cells", "not_run")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
