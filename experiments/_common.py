"""Shared argument parsing for the experiment scripts."""

from __future__ import annotations

import argparse


def parse(description: str, default_config: str, default_out: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default=default_config, help="config file or name in experiments/configs")
    ap.add_argument("--out", default=default_out, help="output directory (resumable)")
    ap.add_argument("--shard", default="0/1", help="part i of N")
    return ap.parse_args()


def run(args: argparse.Namespace, **overrides) -> dict:
    import dataclasses

    from pacbayes_sft.report import build_report
    from pacbayes_sft.sweep import load_config, run_sweep

    cfg = dataclasses.replace(load_config(args.config), **overrides)
    run_sweep(cfg, args.out, shard=args.shard)
    return build_report(args.out)
