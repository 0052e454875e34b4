"""Print the Markdown tables of docs/RESULTS.md for a finished sweep.

python experiments/sweep_tables.py runs/demo
"""

from __future__ import annotations

import argparse

import pandas as pd

from pacbayes_sft.report import build_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir", help="a finished sweep's output directory")
    args = ap.parse_args()
    rep = build_report(args.dir)
    ct, opt = rep["cells"], rep["optimum"]
    cols = [
        c for c in ("n", "observed", "raw_bound", "calibrated", "p_best", "indistinguishable", "determined") if c in opt
    ]
    print("### Best bucket per budget\n")
    print(opt[cols].to_markdown(index=False))
    print("\n### Per-cell terms\n")
    terms = ["mc_mean_risk", "mc_risk_upper", "kl", "sigma", "g_gen", "tv", "tv_lower", "total", "test_risk"]
    terms += [c for c in ("stoch_test_risk", "stoch_test_lower", "stoch_test_upper") if c in ct]
    t = ct.groupby(["objective", "n", "bucket"])[terms].mean()
    print(t.to_markdown(floatfmt=".4g"))
    for metric in ("token_error", "answer_accuracy"):
        if metric in ct:
            print(f"\n### Measured {metric} (whole test set)\n")
            print(ct.pivot_table(index="n", columns="bucket", values=metric).round(4).to_markdown())
    if not rep["predictors"].empty:
        print("\n### Predictors against baselines (held-out budgets)\n")
        print(rep["predictors"].round(2).to_markdown(index=False))
    print("\n### Summary\n")
    print(pd.Series(rep["summary"]).to_string())


if __name__ == "__main__":
    main()
