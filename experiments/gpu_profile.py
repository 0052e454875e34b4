"""Where one sweep cell's time goes on this machine's device, and the same phases set side by side
across devices.

    python experiments/gpu_profile.py run --config demo --cell base__sft__n512__medium__s0 --out cuda.json
    CUDA_VISIBLE_DEVICES= python experiments/gpu_profile.py run --threads 2 --out cpu.json   # the CPU baseline
    python experiments/gpu_profile.py table --profile cpu.json --profile cuda.json \\
        --reference docs/results/demo --candidate RUN/demo --out timing.md

``run`` times one cell with ``benchmarks/profile_cell.py``'s wrappers (training, the test set's
teacher forcing and greedy decoding, the certificate's σ_p choice, stage 2, TV proxy and MC draws,
the stochastic test risk), on the GPU when torch sees one (the sweep's own choice: the trainer
moves the model there), and writes the seconds per phase as JSON with the device, torch version
and peak GPU memory. CUDA is initialised before the clock starts, so the first kernel launch is
not billed to training. ``table`` writes markdown: the phases of several profiles (the first is
the baseline of the speed-up column) and, given two run folders, each cell's recorded stages
(``training.stage_seconds``) in both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _profile_cell_module(untimed: list[str]):
    """``benchmarks/profile_cell.py`` (its wrappers and the SPENT/CALLS tallies), imported by path,
    its ``timed`` made to skip a function the library no longer has where profile_cell names it
    (listed in ``untimed``) instead of failing the whole profile."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import profile_cell
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    wrap = profile_cell.timed

    def timed(module, name: str, label: str) -> None:
        if hasattr(module, name):
            wrap(module, name, label)
        else:
            untimed.append(f"{label} ({module.__name__}.{name} not found)")

    profile_cell.timed = timed
    return profile_cell


def _warm_up() -> str:
    """Initialise CUDA (context, cuBLAS) outside the timed part; the device's name."""
    if not torch.cuda.is_available():
        return "cpu"
    x = torch.randn(256, 256, device="cuda")
    (x @ x).sum().item()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.get_device_name()


def profile(config: str, cell_id: str, threads: int, *, label_free: bool = True) -> dict:
    """Run ``cell_id`` of ``config`` into a temporary folder; seconds per phase and the cell's wall.
    ``label_free=False`` leaves out the label-free answers where the config collects them."""
    from pacbayes_sft.sweep import load_config, runner
    from pacbayes_sft.sweep.cells import find_cell

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    untimed: list[str] = []
    pc = _profile_cell_module(untimed)
    torch.set_num_threads(threads)
    device = _warm_up()
    cfg = load_config(config)
    if not label_free:
        cfg = dataclasses.replace(cfg, label_free=dataclasses.replace(cfg.label_free, source=0))
    pc.instrument()
    with tempfile.TemporaryDirectory() as tmp, pc.point_risk_timer():
        out = Path(tmp)
        (out / "cells").mkdir()
        ctx = runner.sweep_context(cfg, out)
        cell = find_cell(cfg, cell_id, config)
        t0 = time.perf_counter()
        rec = runner.run_cell(ctx, cell, progress=False)
        runner.write_record(out, rec)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return {
        "config": config,
        "cell": cell_id,
        "device": device,
        "threads": threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "wall_seconds": wall,
        "phases": dict(sorted(pc.SPENT.items(), key=lambda kv: -kv[1])),
        "calls": dict(pc.CALLS),
        "untimed": untimed,
        "stage_seconds": rec.training.get("stage_seconds", {}),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        "terms": rec.terms,
    }


def _label(p: dict) -> str:
    return f"{p['device']} ({p['threads']} threads)" if p["device"] == "cpu" else p["device"]


def phase_table(profiles: list[dict]) -> str:
    """Seconds per phase in each profile; the speed-up column divides the first by the last."""
    if len(profiles) < 1:
        raise ValueError("profiles must hold at least one profile")
    phases = list(dict.fromkeys(k for p in profiles for k in p["phases"]))
    heads = [_label(p) for p in profiles]
    ratio = len(profiles) > 1
    lines = ["| phase | " + " | ".join(f"{h} s" for h in heads) + (" | speed-up |" if ratio else " |")]
    lines.append("|---|" + "---:|" * (len(profiles) + ratio))
    for name in [*phases, "cell wall time"]:
        vals = [p["wall_seconds"] if name == "cell wall time" else p["phases"].get(name) for p in profiles]
        cells = ["—" if v is None else f"{v:.2f}" for v in vals]
        if ratio:
            a, b = vals[0], vals[-1]
            cells.append(f"{a / b:.1f}×" if a is not None and b else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stage_table(reference: str | Path, candidate: str | Path) -> str:
    """Each cell's recorded stages (``training.stage_seconds``) and wall seconds in two run
    folders, for the cells both hold."""
    from pacbayes_sft.sweep.store import read_record

    ref_dir, got_dir = (Path(p) / "cells" if (Path(p) / "cells").is_dir() else Path(p) for p in (reference, candidate))
    if not ref_dir.is_dir():
        raise ValueError(f"reference must be a run folder or its cells/ folder, got {str(reference)!r}")
    lines = ["| cell | stage | reference s | candidate s | speed-up |", "|---|---|---:|---:|---:|"]
    totals = [0.0, 0.0]
    for path in sorted(ref_dir.glob("*.json")):
        ref, got = read_record(path), read_record(got_dir / path.name)
        if ref is None or got is None or ref.is_base:
            continue
        a, b = ref.training.get("stage_seconds", {}), got.training.get("stage_seconds", {})
        for stage in [s for s in a if s in b]:
            lines.append(
                f"| {ref.id} | {stage} | {a[stage]:.2f} | {b[stage]:.2f} | {a[stage] / max(b[stage], 1e-9):.1f}× |"
            )
        if ref.seconds and got.seconds:
            totals = [totals[0] + ref.seconds, totals[1] + got.seconds]
            lines.append(
                f"| {ref.id} | **cell** | {ref.seconds:.2f} | {got.seconds:.2f} | {ref.seconds / got.seconds:.1f}× |"
            )
    if totals[1]:
        lines.append(
            f"| all cells both ran | **sum** | {totals[0]:.1f} | {totals[1]:.1f} | {totals[0] / totals[1]:.1f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="profile one cell on this machine's device")
    r.add_argument("--config", default="demo")
    r.add_argument("--cell", default="base__sft__n512__medium__s0")
    r.add_argument("--threads", type=int, default=2, help="torch CPU threads (the CPU profile's 2 in BENCHMARKS)")
    r.add_argument("--out", required=True, help="JSON file to write")
    r.add_argument("--no-label-free", action="store_true", help="leave out the label-free answers")
    t = sub.add_parser("table", help="markdown tables of profiles and of two runs' recorded stages")
    t.add_argument("--profile", action="append", default=[], help="a JSON file written by run (baseline first)")
    t.add_argument("--reference", default="", help="run folder of the baseline records (e.g. docs/results/demo)")
    t.add_argument("--candidate", default="", help="run folder of the records to set against it")
    t.add_argument("--out", default="", help="markdown file to write (default: print only)")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        doc = profile(args.config, args.cell, args.threads, label_free=not args.no_label_free)
        Path(args.out).write_text(json.dumps(doc, indent=1))
        print(phase_table([doc]))
        return 0
    parts = []
    profiles = [json.loads(Path(p).read_text()) for p in args.profile if Path(p).is_file()]
    if profiles:
        cell = profiles[0]["cell"]
        parts.append(f"## Phases of cell {cell} ({profiles[0]['config']})\n\n{phase_table(profiles)}")
        untimed = sorted({u for p in profiles for u in p.get("untimed", [])})
        parts += [f"Not timed: {'; '.join(untimed)}.\n"] if untimed else []
    if args.reference and args.candidate and Path(args.candidate).is_dir():
        parts.append(f"## Recorded stages: {args.candidate} against {args.reference}\n\n"
                     f"{stage_table(args.reference, args.candidate)}")  # fmt: skip
    text = "\n".join(parts) or "nothing to tabulate (no profile and no candidate run)\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
