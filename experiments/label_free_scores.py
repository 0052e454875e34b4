"""Score every label-free estimate of a cell's test risk against the measured risk (issue 24).

    python experiments/label_free_scores.py docs/results/label_free_study [--n-boot 300]

Reads a run folder whose cells collected ``label_free`` columns (e.g. the ``label_free_study``
config), writes ``label_free_estimates.csv`` (one row per cell, test mixture and estimator) and
``label_free_scores_by_mixture.csv`` (per mixture and estimator: MAE, mean within-budget Spearman over the
groups whose buckets span >= 0.05 of measured risk, share of groups whose pick is in the observed
95% set, and share of determined groups picked exactly) and ``certificates.csv`` (per cell: the
certified U_MC + G_gen against the point model's error on the 200 fresh training-distribution
problems, and the stochastic against the point test error) into it, and prints both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pacbayes_sft import defaults
from pacbayes_sft.report.label_free import estimates_table, score_table
from pacbayes_sft.sweep.store import folder_config, valid_cells


def certificate_table(run: Path) -> pd.DataFrame:
    """Per cell: the certified U_MC + G_gen against the point model's answer error on the 200 fresh
    training-distribution problems, and the stochastic against the point model's test error."""
    _, state = folder_config(run)
    rows = []
    for r in valid_cells(run, state):
        if r.is_base or not r.label_free:
            continue
        t = r.terms
        fresh = 1.0 - float(np.mean(r.label_free["source"]["correct"]))
        point_test = 1.0 - float(np.mean(r.items["answer_correct"]))
        rows.append({"base": r.base, "objective": r.objective, "n": r.n, "bucket": r.bucket, "seed": r.seed,
                     "bound": t["mc_risk_upper"] + t["g_gen"], "fresh_error": fresh, "kl": t["kl"],
                     "stoch_test": t["stoch_test_risk"], "point_test": point_test})  # fmt: skip
    df = pd.DataFrame(rows)
    df["bound_minus_fresh"] = df["bound"] - df["fresh_error"]
    df["stoch_minus_point"] = df["stoch_test"] - df["point_test"]
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n-boot", type=int, default=defaults.LABEL_FREE_REPORT_N_BOOT, help="bootstrap replicates of each estimator's interval")
    args = ap.parse_args()
    table = estimates_table(args.run, n_boot=args.n_boot)
    table.to_csv(args.run / "label_free_estimates.csv", index=False)
    scores = score_table(args.run, table)
    scores.to_csv(args.run / "label_free_scores_by_mixture.csv", index=False)
    cells = table[["base", "objective", "n", "bucket", "seed"]].drop_duplicates()
    print(f"{len(cells)} cells, {table['mixture'].nunique()} test mixtures")
    print(scores.to_markdown(index=False, floatfmt=".3f"))
    cert = certificate_table(args.run)
    cert.to_csv(args.run / "certificates.csv", index=False)
    summary = cert.groupby("n").agg(
        cells=("bound", "size"), vacuous=("bound", lambda b: int((b >= 1 - 1e-9).sum())),
        bound_mean=("bound", "mean"), fresh_mean=("fresh_error", "mean"),
        worst_bound_minus_fresh=("bound_minus_fresh", "max"), mean_bound_minus_fresh=("bound_minus_fresh", "mean"),
        worst_abs_stoch_minus_point=("stoch_minus_point", lambda d: float(d.abs().max())),
        kl_median=("kl", "median"),
    )  # fmt: skip
    print("\nG_gen against the point model's error on fresh training-distribution problems, per n:")
    print(summary.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
