"""Kordi et al.'s view: train bucket × test op accuracy on held-out templates, and IRT difficulty of
the test items rated by the sweep's own fine-tuned models (Spearman with op count and CoT length)."""

import json
from pathlib import Path

import numpy as np
from _common import parse, run

from pacbayes_sft.estimators.difficulty import irt_difficulty_report
from pacbayes_sft.estimators.irt import fit_irt

if __name__ == "__main__":
    args = parse(__doc__, "demo", "runs/cross_difficulty")
    rep = run(args)
    cells = rep["cells"]
    score = "answer_accuracy" if "answer_accuracy" in cells else "exact_match"
    print(cells.groupby(["bucket", "n"])[score].mean().unstack("n").round(3).to_string())
    # Per-slice accuracies of every fine-tuned model form a models × test-op response matrix;
    # with per-item records one would use items; here the test ops are the items.
    rows = []
    for f in sorted((Path(args.out) / "cells").glob("*__n*.json")):
        rec = json.loads(f.read_text())
        acc = {int(r["slice"]): r["value"] for r in rec["rows"] if r["metric"] == score}
        rows.append(acc)
    ops = sorted(rows[0])
    mat = np.array([[r[o] for o in ops] for r in rows])
    binary = (mat >= 0.5).astype(float)  # a model "answers" an op slice when it is right at least half the time
    if binary.std() > 0:
        irt = fit_irt(binary, "1pl")
        print("IRT difficulty per test op:", dict(zip(ops, np.round(irt.difficulty, 2))))
        print("Spearman with op count:", irt_difficulty_report(irt, {"op": ops}))
