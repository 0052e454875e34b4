"""Project what a sweep grid costs from measured cells (issue 23: the CPU study's grid, rerun).

    python experiments/project_cost.py docs/results/label_free_study --grid cpu_study

Reads every finished cell's ``training.stage_seconds`` (wall seconds per stage, one process
with 2 torch threads on 2 cores) from the measured run folder, fits per (base, objective)
seconds(n) = a + b·n by least squares over its budgets, leaving out the stages named in
``--exclude`` (default ``label_free``: the CPU study collects no label-free answers), and sums
the fit over every cell of the ``--grid`` config (budgets outside the measured range are
extrapolated along the line, and said so). Prints the per-n means it fitted on and the projection.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from pacbayes_sft.sweep import load_config
from pacbayes_sft.sweep.cells import cells_of
from pacbayes_sft.sweep.store import folder_config, valid_cells


def measured(run: Path, exclude: set[str]) -> dict[tuple, dict[int, list[float]]]:
    """(base, objective) → n → wall seconds of each finished cell, without the excluded stages."""
    _, state = folder_config(run)
    out: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in valid_cells(run, state):
        stages = (r.training or {}).get("stage_seconds")
        if r.is_base or not stages:
            continue
        out[(r.base, r.objective)][r.n].append(sum(v for k, v in stages.items() if k not in exclude))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--grid", default="cpu_study", help="config whose grid is projected")
    ap.add_argument("--exclude", default="label_free", help="comma-separated stages left out")
    args = ap.parse_args()
    data = measured(args.run, set(filter(None, args.exclude.split(","))))
    if not data:
        raise SystemExit(f"{args.run}: no finished cell records stage_seconds")
    fits = {}
    for key, by_n in sorted(data.items()):
        ns = sorted(by_n)
        means = [float(np.mean(by_n[n])) for n in ns]
        b, a = np.polyfit(ns, means, 1) if len(ns) > 1 else (0.0, means[0])
        fits[key] = (a, b, min(ns), max(ns))
        shown = ", ".join(f"n={n}: {m:.1f} s ({len(by_n[n])} cells)" for n, m in zip(ns, means))
        print(f"{key[0]}/{key[1]}: {shown}; fit {a:.1f} + {b:.4f}·n s")
    total, outside = 0.0, set()
    for cell in cells_of(load_config(args.grid)):
        a, b, lo, hi = fits.get((cell.base, cell.objective), fits[next(iter(fits))])
        total += a + b * cell.n
        if not lo <= cell.n <= hi:
            outside.add(cell.n)
    print(f"grid {args.grid}: {len(cells_of(load_config(args.grid)))} cells, projected {total / 3600:.2f} wall hours "
          f"on 2 cores ({2 * total / 3600:.2f} core-hours)")  # fmt: skip
    if outside:
        print(f"extrapolated beyond the measured budgets: n = {sorted(outside)}")


if __name__ == "__main__":
    main()
