"""``demo``, ``adapter-demo``, ``sweep``, ``report``, ``forecast`` and ``irt``: whole studies."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from .. import console
from ..bounds import BOUNDS, describe_certification
from ..certify import Certificate
from ..config import add_options
from ..demo import run_demo
from ..racing.decide import decide_sweep
from ..report import bucket_order, build_report
from ..report.forecast import forecast
from ..report.item_difficulty import cross_difficulty, item_responses, largest_full_budget, rate_items
from ..report.pages import summary_lines
from ..sweep import load_config, parse_only, run_sweep
from ..sweep.config import CONFIG_DIR, Resources
from ..sweep.launch import LAUNCHERS, launch_sweep
from ..sweep.slurm import SlurmUnreachable
from ..sweep.store import failures, folder_config

# The closing table of ``report``: the columns a reader needs, named for what they mean.
OPTIMUM_COLUMNS = {
    "base": "base",
    "objective": "objective",
    "n": "n",
    "observed": "measured best",
    "p_best": "P(best) by bucket",
    "determined": "decided at 95%",
    "race": "race (fresh items)",
    "seed_bests": "best per seed",
    "raw_bound": "bound's pick",
    "calibrated": "fitted predictor's pick",
    "label_free_picks": "label-free picks (estimates)",
}


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the demo sweep on the shipped base, then its report."""
    base = load_config(args.config).bases[0].path
    t0 = time.perf_counter()
    rc = _cmd_sweep(argparse.Namespace(config=args.config, out=args.out, shard="0/1", report=False, decide=True))
    if rc:
        return rc
    rc = _cmd_report(argparse.Namespace(dir=args.out))
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min (base model: {base})")
    return rc


def _cmd_adapter_demo(args: argparse.Namespace) -> int:
    doc = run_demo(args.out, n=args.n, steps=args.steps, seed=args.seed, m=args.m)
    cert = Certificate.from_dict(doc)
    table = pd.DataFrame(cert.grid)[["sigma", "kl", "mc_mean_risk", "mc_risk_upper", *BOUNDS]]
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    print(
        f"\nbest sigma {cert.sigma.value:g}: two-gap bound (Prop. 4.1, Seeger) = {cert.empirical_risk.mc_upper:.4f} "
        f"(MC risk upper) + {cert.g_gen.seeger:.4f} (G_gen) + {cert.g_ext:.4f} (G_ext) = {cert.total:.4f}"
    )
    print(f"measured test risk {doc['measured_test_risk']:.4f}; point train risk {cert.empirical_risk.point:.4f}")
    print(cert.statement())
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def _sbatch_options(items: list[str]) -> dict[str, str]:
    """``--sbatch KEY=VALUE`` (or a bare ``KEY``: a flag) options as a mapping."""
    return {key: value for key, _, value in (item.partition("=") for item in items)}


def _resources(cfg, args: argparse.Namespace):
    """The config's resources with the ones given on the command line put over them (``--sbatch``
    options key by key, ``--setup`` lines in place of the config's)."""
    res = cfg.resources
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Resources)
        if f.name not in ("sbatch", "setup") and getattr(args, f.name, None) is not None
    }
    if getattr(args, "sbatch", None):
        given["sbatch"] = res.sbatch | _sbatch_options(args.sbatch)
    if getattr(args, "setup", None):
        given["setup"] = list(args.setup)
    return dataclasses.replace(cfg, resources=dataclasses.replace(res, **given))


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def _launch(cfg, args: argparse.Namespace) -> int:
    if args.shard != "0/1":
        raise ValueError("--shard splits a sweep by hand; with --launcher the launcher assigns cells itself")
    cfg = _resources(cfg, args)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if main_thread else None  # says what keeps running
    try:
        summary = launch_sweep(cfg, args.out, launcher=args.launcher, only=parse_only(args.only), update=args.update)
    except SlurmUnreachable as exc:
        print(f"pacbayes-sft: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"launcher stopped; the jobs it submitted are in {Path(args.out) / 'launcher' / 'jobs.json'}: "
              "Slurm jobs keep running, and the same command adopts them", file=sys.stderr)  # fmt: skip
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    total = f"{summary['cells']}"
    if summary["selected"] != summary["cells"]:
        total = f"{summary['selected']} selected cells ({summary['cells']} in the grid)"
    print(
        f"sweep {cfg.name} on {args.launcher}: {summary['ran']} cells run, {summary['skipped']} already finished "
        f"of {total}; results in {args.out}"
    )
    for cell, error in summary["failed"].items():
        print(f"cell {cell} FAILED after {summary['attempts'][cell]} attempts: {error}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if getattr(args, "launcher", "none") != "none":
        rc = _launch(cfg, args)
    else:
        summary = run_sweep(
            cfg,
            args.out,
            shard=args.shard,
            only=parse_only(getattr(args, "only", None)),
            update=bool(getattr(args, "update", False)),
            progress=console.show_progress(),
        )
        part = "" if args.shard == "0/1" else f" (shard {args.shard}: {summary['in_shard']} of them)"
        print(
            f"sweep {cfg.name}: {summary['cells']} cells{part}, {summary['ran']} run now, "
            f"{summary['skipped']} already finished; results in {args.out}"
        )
        rc = 0
    if rc == 0 and (getattr(args, "decide", False) or cfg.decide.auto):
        _decide(args.out)
    if args.report and rc == 0:
        return _cmd_report(argparse.Namespace(dir=args.out))
    return rc


def _decide(out: str) -> None:
    """The decide stage: every group raced to a decision with the config's ``decide`` settings."""
    decisions = decide_sweep(out, progress=console.show_progress())
    for d in decisions:
        print(d.line())
    raced = [d for d in decisions if d.result is not None]
    settled = sum(d.result.reason != "cap" for d in raced)
    what = "groups" if all(d.mixture is None for d in decisions) else "(group, mixture) races"
    print(f"decided by race (certified, fresh items): {settled} of {len(decisions)} {what}; races: {Path(out) / 'race'}")
    seeded = [d.over_seeds for d in raced if (d.over_seeds or {}).get("status") == "done"]
    if seeded:
        over = sum(s["reason"] != "open" for s in seeded)
        print(f"decided over training seeds too (estimates, not certified; a separate count): {over} of {len(seeded)}")


def _cmd_report(args: argparse.Namespace) -> int:
    rep = build_report(args.dir)
    opt = rep["optimum"]
    cols = [c for c in OPTIMUM_COLUMNS if c in opt]
    table = opt[cols].copy()
    if "determined" in table:
        table["determined"] = table["determined"].map({True: "yes", False: "no"})
    print(table.rename(columns=OPTIMUM_COLUMNS).to_string(index=False))
    for line in summary_lines(rep["summary"], len(opt)):
        print(line)
    print(describe_certification(("emp_risk", "g_gen"), ("g_ext",)))
    for cell, rec in failures(args.dir).items():
        print(f"cell {cell} FAILED after {rec['attempts']} attempts (not in the tables): {rec['error']}")
    print(f"report: {rep['report_md']} (and {rep['report_html']})")
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    table = forecast(args.dir, args.budget)
    cols = ["bucket", "train_risk", "kl", "tv", "predicted_risk", "lower", "upper"]
    for (base, obj), g in table.groupby(["base", "objective"]):
        best = g.loc[g["best"], "bucket"].iloc[0]
        print(f"{base}/{obj} at n = {args.budget}: predicted best bucket {best}")
        with pd.option_context("display.float_format", "{:.3g}".format):
            print(g[cols].to_string(index=False))
    for (base, obj), (a, c) in table.attrs["weights"].items():
        note = "  (both 0: the gap terms explain none of the pilots' test risk; the forecast ranks by R̂ alone)"
        print(
            f"two-gap weights {base}/{obj}: a = {a:.3g} on sqrt(KL/n), c = {c:.3g} on TV"
            + (note if a == c == 0 else "")
        )
    if table.attrs.get("skipped"):
        print(f"not forecast (fewer than two complete pilot budgets): {', '.join(table.attrs['skipped'])}")
    print("forecast: power laws in n of the MC training risk and KL per bucket, TV per bucket, two-gap weights")
    print("fitted on the pilot cells; the interval is +-1.96 residual s.d. of that fit (an estimate, not a bound)")
    return 0


def _cmd_irt(args: argparse.Namespace) -> int:
    responses = item_responses(args.dir)
    items = rate_items(responses, model=args.model)
    out = Path(args.out or Path(args.dir) / "items_irt.csv")
    items.to_csv(out, index=False)
    print(f"{items.shape[0]} test items rated by {responses['subject'].nunique()} models ({args.model} IRT)")
    print(items.groupby("slice")[["difficulty", "p_correct"]].mean().round(3).to_string())
    order = bucket_order(folder_config(args.dir)[0])
    cross = largest_full_budget(cross_difficulty(responses, items, args.bins), order)
    for (base, obj), g in cross.groupby(["base", "objective"]):
        print(f"{base}/{obj}, n = {int(g['n'].iloc[0])}: answer accuracy by IRT bin (1 = easiest)")
        print(g.pivot(index="bucket", columns="irt_bin", values="accuracy").round(3).to_string())
    print(f"items: {out}")
    return 0


def _config_names() -> str:
    """The shipped config names for --config's help ("" when the experiments folder is absent)."""
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    return f" ({', '.join(names)})" if names else ""


def _add_sweep(sub) -> None:
    sw = sub.add_parser(
        "sweep", help="run (or resume) an (n x difficulty x seed x objective) grid of LoRA fine-tunings"
    )
    sw.add_argument(
        "--config", required=True, help=f"YAML/JSON config file, or a name in experiments/configs{_config_names()}"
    )
    sw.add_argument("--out", required=True, help="output directory; re-running resumes, skipping finished cells")
    sw.add_argument("--shard", default="0/1", help="run part i of N (i/N), for several processes or machines")
    sw.add_argument(
        "--only",
        action="append",
        metavar="FIELD=V1,V2",
        help="run only the cells whose base, objective, n, bucket or seed is listed (repeatable); "
        "a later run without it completes the same folder",
    )
    sw.add_argument(
        "--update",
        action="store_true",
        help="switch a folder made by another config to this one: cells whose inputs (their base, the task, "
        "buckets, test set and settings) did not change are kept, the rest are rerun",
    )
    sw.add_argument("--report", action="store_true", help="build the report when done")
    sw.add_argument(
        "--decide",
        action="store_true",
        help="then race every group's buckets on fresh test items to a decision (the config's 'decide' section: "
        "epsilon, level, round_items, max_items)",
    )
    sw.add_argument(
        "--launcher",
        choices=("none", *LAUNCHERS),
        default="none",
        help="none: run the cells in this process; local: each cell a task in its own process (submitit); "
        "slurm: each cell a Slurm job (submitit), with the resources below or the config's 'resources'; "
        "a backend registered with sweep.launch.register_launcher is chosen by its name",
    )
    unset = dict.fromkeys((f.name for f in dataclasses.fields(Resources)), None)
    add_options(sw, Resources, exclude=("setup",), unset_help="the config's resources", **unset)
    sw.add_argument(
        "--sbatch",
        action="append",
        metavar="KEY=VALUE",
        help="one more sbatch option for every Slurm job, without the leading -- (repeatable; e.g. "
        "--sbatch mail-type=END, a bare KEY is a flag); put over the config's resources.sbatch key by key",
    )
    sw.add_argument(
        "--setup",
        action="append",
        metavar="LINE",
        help="a shell line every Slurm job runs before its cell (repeatable, in order; e.g. --setup 'module load "
        "cuda'); replaces the config's resources.setup",
    )
    sw.set_defaults(func=_cmd_sweep)


def add_commands(sub) -> None:
    dm = sub.add_parser("demo", help="the main job: the demo (n x difficulty) sweep on the shipped base and its report")
    dm.add_argument("--config", default="demo", help="config (default: experiments/configs/demo.yaml)")
    dm.add_argument("--out", default="runs/demo", help="output directory (resumable)")
    dm.set_defaults(func=_cmd_demo)

    d = sub.add_parser(
        "adapter-demo", help="train a LoRA adapter on a tiny from-config model and print its bound report"
    )
    d.add_argument("--out", default="runs/adapter_demo", help="output directory (adapter + report.json)")
    d.add_argument("--n", type=int, default=256, help="training examples")
    d.add_argument("--steps", type=int, default=60, help="optimizer steps")
    d.add_argument("--m", type=int, default=1, help="posterior draws per training example and sigma for the MC risk")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.set_defaults(func=_cmd_adapter_demo)
    _add_sweep(sub)

    fc = sub.add_parser("forecast", help="predict the best bucket at a budget no cell was trained at, from a sweep")
    fc.add_argument("dir", help="the sweep's output directory (its budgets below --budget are the pilots)")
    fc.add_argument("--budget", type=int, required=True, help="the data budget n to forecast")
    fc.set_defaults(func=_cmd_forecast)

    ir = sub.add_parser("irt", help="rate a sweep's test items by IRT over its own models; cross-difficulty table")
    ir.add_argument("dir", help="the sweep's output directory")
    ir.add_argument("--out", default="", help="CSV of item difficulties (default: DIR/items_irt.csv)")
    ir.add_argument("--model", default="2pl", choices=("1pl", "2pl"), help="IRT model")
    ir.add_argument("--bins", type=int, default=4, help="quantile bins of item difficulty in the table")
    ir.set_defaults(func=_cmd_irt)

    rp = sub.add_parser("report", help="merge a sweep's cells (all shards) into tables, plots and report.md/html")
    rp.add_argument("dir", help="the sweep's output directory")
    rp.set_defaults(func=_cmd_report)
