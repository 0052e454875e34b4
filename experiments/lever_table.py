"""Issue 11: every G_gen lever compared at equal stochastic training risk.

Reads the certificates that experiments/prior_levers.py and experiments/subspace_lever.py wrote
(one per lever, each with its σ grid of (KL, Monte-Carlo training risk) points) and, for a target
stochastic training risk r*, reports the KL each lever pays to keep its sampled models that
accurate. The KL is log-linearly interpolated between the two grid points whose MC risk brackets
r*. It also reports the Seeger bound that KL would give at that risk, with the certificate's own
n and δ, ignoring the Monte-Carlo slack. A learned posterior is one point, so it is reported at
its own risk.

    python experiments/lever_table.py runs/prior_levers --risk 0.03
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pandas as pd

from pacbayes_sft.bounds import pac_bayes_bound


def kl_at_risk(grid: pd.DataFrame, risk: float) -> float | None:
    """log-linear interpolation of KL at MC risk ``risk`` along the σ grid (None: out of range)."""
    g = grid.sort_values("sigma")
    pts = list(zip(g["mc_mean_risk"], g["kl"]))
    for (r0, k0), (r1, k1) in itertools.pairwise(pts):
        if r0 <= risk <= r1 and r1 > r0:
            t = (risk - r0) / (r1 - r0)
            return math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0)))
    return None


def row(path: Path, risk: float) -> dict:
    doc = json.loads(path.read_text())
    grid = pd.DataFrame(doc["grid"])
    n, delta = doc["n"], doc["delta"]["per_grid_point_bound"]
    own = len(grid) == 1
    r = float(grid["mc_mean_risk"].iloc[0]) if own else risk
    kl = float(grid["kl"].iloc[0]) if own else kl_at_risk(grid, risk)
    out = {
        "lever": path.stem.removeprefix("certificate_"),
        "loss": doc["loss"],
        "n_bound": n,
        "prior": doc["prior"]["kind"],
    }
    out |= {"MC train risk": r, "at": "its own risk" if own else "interpolated", "KL (nats)": kl}
    out["KL / n"] = None if kl is None else kl / n
    out["Seeger bound at that risk"] = None if kl is None else float(pac_bayes_bound("seeger", r, kl, n, delta))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default="runs/prior_levers")
    ap.add_argument("--risk", type=float, default=0.03, help="target stochastic training risk r*")
    ap.add_argument("--loss", default="token_error")
    args = ap.parse_args()
    rows = [row(p, args.risk) for p in sorted(Path(args.folder).glob("certificate_*.json"))]
    table = pd.DataFrame([r for r in rows if r["loss"] == args.loss])
    print(table.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
