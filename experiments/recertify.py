"""Recompute finished two-stage cells' certificates with another Monte-Carlo budget (no retraining).

    python experiments/recertify.py docs/results/label_free_study --only n=2048 --m 2 --all-examples

For each finished cell (optionally filtered like ``sweep --only``), the saved posterior mean Q,
prior centre P and scales are loaded and the certificate is recomputed on the cell's bound half
with ``m`` own draws per example (and every example, with ``--all-examples``, instead of the
config's ``mc_examples`` subsample). Writes ``recertified.csv`` beside the cells: the bound
U_MC + G_gen under the config's settings and under these, with the point model's error on the
cell's fresh training-distribution problems. Choosing between the two after seeing both would
need a union bound over them (δ/2 each); the file reports both and picks nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pacbayes_sft.adapters import attach_adapter
from pacbayes_sft.certify import CertifySettings
from pacbayes_sft.certify.two_stage import load_posterior_state, recertify_two_stage
from pacbayes_sft.sweep.cells import cells_of, find_cell, parse_only, select_cells
from pacbayes_sft.sweep.runner import sweep_context
from pacbayes_sft.sweep.store import folder_config, valid_cells
from pacbayes_sft.training.models import load_causal_lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--only", action="append", default=[], help="FIELD=V1,V2 (as for sweep)")
    ap.add_argument("--m", type=int, default=2, help="own posterior draws per bound example")
    ap.add_argument("--all-examples", action="store_true", help="every bound example (no mc_examples subsample)")
    args = ap.parse_args()
    cfg, state = folder_config(args.run)
    bound = dataclasses.replace(cfg.bound, m=args.m, mc_examples=None if args.all_examples else cfg.bound.mc_examples)
    ctx = sweep_context(cfg, args.run)
    wanted = {c.id for c in select_cells(cells_of(cfg), parse_only(args.only))}
    rows = []
    for rec in valid_cells(args.run, state):
        if rec.is_base or rec.id not in wanted or not rec.label_free:
            continue
        cell = find_cell(cfg, rec.id, str(args.run))
        base_dir, tok = ctx.bases[cell.base]
        adapter = args.run / "adapters" / cell.id
        model = attach_adapter(load_causal_lm(base_dir), adapter, base_name=str(base_dir))
        cert = recertify_two_stage(
            model, adapter / "prior", tok, ctx.task.train_examples(cell), ctx.task.test_set, bound=bound,
            tv=cfg.tv, evaluation=cfg.eval, state=load_posterior_state(adapter),
            settings=CertifySettings(judge=ctx.task.judge, seed=cell.seed),
        )  # fmt: skip
        t = rec.terms
        rows.append({"cell": rec.id, "n": rec.n, "bucket": rec.bucket, "seed": rec.seed,
                     "fresh_error": 1.0 - float(np.mean(rec.label_free["source"]["correct"])),
                     "bound_config": t["mc_risk_upper"] + t["g_gen"],
                     "bound_recomputed": cert.empirical_risk.mc_upper + cert.g_gen.seeger,
                     "mc_losses": cert.empirical_risk.mc_losses, "kl": cert.kl.value_nats})  # fmt: skip
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.run / "recertified.csv", index=False)
    print(table.describe().to_string())


if __name__ == "__main__":
    main()
