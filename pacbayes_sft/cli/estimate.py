"""``estimate-risk``: how will this adapter do on my benchmark? Label-free estimates of its test
risk from the benchmark's prompts (never its answers), one row per estimator."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .. import defaults
from ..certify import EvalConfig, TVConfig, estimate_test_risk
from ..certify.label_free_config import INPUT_REQUIRES, LabelFreeConfig
from ..config import add_options, options_from_args
from ..data.loaders import read_rows
from ..estimators.answers import igsm_extractor
from ..estimators.label_free import ESTIMATORS
from ..sweep import find_cell, sweep_context
from ..sweep.store import folder_config, read_record
from .common import positive_float


def read_prompts(path: str, column: str) -> list[str]:
    """The non-empty strings of ``column`` in a .jsonl/.csv/.parquet file; ValueError naming
    ``--prompts`` when the file is empty or lacks the column."""
    try:
        rows = read_rows(path)
    except ValueError as exc:
        raise ValueError(f"--prompts: {exc}") from None
    if not rows:
        raise ValueError(f"--prompts: {path!r} holds no rows")
    missing = [i for i, r in enumerate(rows) if column not in r]
    if missing:
        raise ValueError(
            f"--prompts: {path!r} has no column {column!r} (row {missing[0]}; columns: {sorted(rows[missing[0]])}); "
            "name it with --prompt-column"
        )
    prompts = [r[column] for r in rows]
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"--prompts: row {bad[0]} of {path!r} has no prompt text in column {column!r}")
    return prompts


def read_source(path: str, column: str) -> list[dict]:
    """Labelled source examples: every row needs a prompt (in ``column``) and an ``answer``;
    ValueError naming ``--source`` otherwise."""
    return [{"prompt": r[column], "answer": str(r["answer"])} for r in _labelled_rows(path, column, "--source")]


def _labelled_rows(path: str, column: str, arg: str) -> list[dict]:
    """The rows of a labelled file, each checked for a prompt (in ``column``) and an ``answer``;
    ValueError naming ``arg`` otherwise."""
    try:
        rows = read_rows(path)
    except ValueError as exc:
        raise ValueError(f"{arg}: {exc}") from None
    if not rows:
        raise ValueError(f"{arg}: {path!r} holds no rows")
    for i, r in enumerate(rows):
        prompt, answer = r.get(column), r.get("answer")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{arg}: row {i} of {path!r} has no prompt text in column {column!r}")
        if answer is None or (isinstance(answer, float) and math.isnan(answer)):
            raise ValueError(f"{arg}: row {i} of {path!r} has no 'answer' to score the adapter's answer with")
    return rows


def read_pool(path: str, column: str, slice_column: str) -> list[dict]:
    """A labelled pool of every difficulty: every row needs a prompt (``column``), an ``answer`` and
    its slice (``slice_column``: an operation count or difficulty bin); ValueError naming
    ``--pool`` otherwise."""
    rows = []
    for i, r in enumerate(_labelled_rows(path, column, "--pool")):
        value = r.get(slice_column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            raise ValueError(f"--pool: row {i} of {path!r} has no slice in column {slice_column!r} "
                             "(name it with --pool-slice-column)")  # fmt: skip
        rows.append({"prompt": r[column], "answer": str(r["answer"]), "op": value})
    if len({str(r["op"]) for r in rows}) < 2:
        raise ValueError(f"--pool: {path!r} holds one slice only ({rows[0]['op']!r}); the slice weights need at least 2")
    return rows


def _held_out_source(ctx: Any, cell: Any, size: int) -> list:
    """``size`` training-distribution examples the cell did not train on, from its task
    (:meth:`~pacbayes_sft.sweep.tasks.Task.held_out_examples`: the next ones of the cell's own
    stream; fewer when a dataset pool ends); ValueError naming ``--run`` when none is left."""
    try:
        return ctx.task.held_out_examples(cell, size)
    except ValueError as exc:
        raise ValueError(f"--run: {exc}") from None


def _cell_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """What :func:`estimate_test_risk` needs for a sweep's cell: its data arguments, and the
    :class:`LabelFreeConfig` fields the cell fixes (σ, space, generation)."""
    run = Path(args.run)
    cfg, _ = folder_config(run)
    cell = find_cell(cfg, args.cell, str(run))
    adapter = run / "adapters" / cell.id
    if not (adapter / "adapter_config.json").is_file():
        raise ValueError(f"cell {cell.id!r} has no saved adapter under {str(adapter)!r}; run the sweep first")
    record = read_record(run / "cells" / f"{cell.id}.json")
    ctx = sweep_context(cfg, run)
    prompts = read_prompts(args.prompts, args.prompt_column) if args.prompts else [e.prompt for e in ctx.task.test_set]
    wanted = _samples_wanted(args.estimators)  # the task's samples are drawn only for estimators that read them
    if args.source:
        source = read_source(args.source, args.source_prompt_column)
    else:
        source = _held_out_source(ctx, cell, args.n_source) if "source" in wanted else None
    if args.pool:
        pool = read_pool(args.pool, args.pool_prompt_column, args.pool_slice_column)
    else:
        pool = _task_pool(ctx, args.n_pool) if args.n_pool and "pool" in wanted else None
    if bool(args.source) != bool(args.pool):
        raise ValueError("--source and --pool: with --run, give both files or neither (one scorer judges both)")
    sigma = args.sigma if args.sigma is not None else (record.terms.get("sigma") if record else None)
    return {
        "base": ctx.bases[cell.base][0],
        "adapter": adapter,
        "prompts": prompts,
        "source": source,
        "pool": pool,
        "judge": args.scorer if args.source else ctx.task.judge,
        "extract": igsm_extractor(cfg.task.modulus) if cfg.task.kind == "igsm" and not args.source else None,
    }, {"sigma": sigma, "space": cfg.bound.space, "evaluation": cfg.eval}


def _samples_wanted(estimators: str) -> set[str]:
    """The labelled samples ("source", "pool") the estimators named in ``--estimators`` read (every
    sample when none is named: then every estimator the inputs allow runs)."""
    names = [e.strip() for e in estimators.split(",") if e.strip()] if estimators else list(ESTIMATORS)
    needs = {f for n in names if n in ESTIMATORS for f in ESTIMATORS[n].needs}
    return {sample for f in needs for sample in INPUT_REQUIRES[f] if sample in ("source", "pool")}


def _task_pool(ctx: Any, m: int) -> list:
    """The task's labelled pool, ``m`` per test slice; ValueError naming ``--n-pool`` when it cannot be drawn."""
    try:
        return ctx.task.pool_examples(m)
    except ValueError as exc:
        raise ValueError(f"--n-pool: {exc}") from None


def _file_inputs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    missing = [f"--{k}" for k in ("base", "adapter", "prompts") if not getattr(args, k)]
    if missing:
        raise ValueError(f"estimate-risk needs {', '.join(missing)} (or --run DIR --cell ID for a sweep's cell)")
    return {
        "base": args.base,
        "adapter": args.adapter,
        "prompts": read_prompts(args.prompts, args.prompt_column),
        "source": read_source(args.source, args.source_prompt_column) if args.source else None,
        "pool": read_pool(args.pool, args.pool_prompt_column, args.pool_slice_column) if args.pool else None,
        "judge": args.scorer,
    }, {
        "sigma": args.sigma,
        "space": args.space,
        "evaluation": options_from_args(EvalConfig, args, prefix="eval_", generate=True),
    }


def _print_table(df: pd.DataFrame, quiet: bool) -> None:
    shown = pd.DataFrame(
        {
            "estimator": df["estimator"],
            "estimate": df["estimate"].map("{:.4f}".format),
            f"interval ({df['level'].iloc[0]:.0%})": [
                f"[{lo:.4f}, {hi:.4f}]" for lo, hi in zip(df["lower"], df["upper"])
            ],
            "certified": df["certified"].map({True: "yes", False: "no (estimate)"}),
            "risk of": df["risk_of"],
        }
    )
    print(shown.to_string(index=False))
    if not quiet:
        print("\nwhat each row assumes:")
        for name, text in zip(df["estimator"], df["assumptions"]):
            print(f"  {name}: {text}")


def _write_atomic(df: pd.DataFrame, path: str) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, out)


def _cmd_estimate(args: argparse.Namespace) -> int:
    if args.n_source < 1:
        raise ValueError(f"--n-source must be an integer >= 1, got {args.n_source}")
    if args.n_pool < 0:
        raise ValueError(f"--n-pool must be an integer >= 0, got {args.n_pool}")
    if args.run or args.cell:
        if not (args.run and args.cell):
            raise ValueError("--run and --cell go together: a sweep directory and one of its cell ids")
        inputs, fixed = _cell_inputs(args)
    else:
        inputs, fixed = _file_inputs(args)
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()] if args.estimators else None
    config = LabelFreeConfig(
        **fixed,
        estimators=estimators,
        draws=args.draws,
        delta=args.delta,
        beta=args.beta,
        q=args.q,
        n_boot=args.n_boot,
        seed=args.seed,
        tv=options_from_args(TVConfig, args, prefix="tv_"),
    )
    df = estimate_test_risk(**inputs, seeds_adapters=args.seed_adapters, config=config)
    n_src = len(inputs["source"]) if inputs["source"] is not None else 0
    n_pool = len(inputs["pool"]) if inputs["pool"] is not None else 0
    print(f"estimated test risk (answer error) on {len(inputs['prompts'])} prompts; labelled source items: {n_src}; "
          f"labelled pool items: {n_pool}")  # fmt: skip
    _print_table(df, args.quiet)
    if args.out:
        _write_atomic(df, args.out)
        print(f"table: {args.out}")
    return 0


def add_commands(sub) -> None:
    e = sub.add_parser(
        "estimate-risk", help="label-free estimates of an adapter's test risk from the test prompts (no answers)"
    )
    e.add_argument("--run", default="", help="a sweep's output directory: estimate one of its cells (with --cell)")
    e.add_argument("--cell", default="", help="the cell id, e.g. base__sft__n128__hard__s0 (with --run)")
    e.add_argument("--base", default="", help="base model directory")
    e.add_argument("--adapter", default="", help="LoRA adapter directory trained on --base")
    e.add_argument("--prompts", default="", help="the benchmark's prompts (.jsonl/.csv/.parquet); answers unused")
    e.add_argument("--prompt-column", default="prompt", help="the column of --prompts holding the prompt text")
    e.add_argument(
        "--source",
        default="",
        help="labelled training-distribution examples the adapter did not train on (prompt and answer "
        "columns); "
        "with --run: default the next --n-source examples of the cell's training stream",
    )
    e.add_argument("--source-prompt-column", default="prompt", help="the column of --source holding the prompt text")
    e.add_argument(
        "--n-source", type=int, default=defaults.LABEL_FREE_SOURCE, help="with --run: held-out source examples to draw"
    )
    e.add_argument(
        "--pool",
        default="",
        help="labelled held-out examples of every difficulty (prompt, answer and slice columns), for iw and "
        "iw_slices; with --run: default --n-pool problems of each test slice from the sweep's task",
    )
    e.add_argument("--pool-prompt-column", default="prompt", help="the column of --pool holding the prompt text")
    e.add_argument("--pool-slice-column", default="op", help="the column of --pool holding each row's slice")
    e.add_argument(
        "--n-pool", type=int, default=defaults.LABEL_FREE_POOL, help="with --run: pool problems per test slice (0 = none)"
    )
    e.add_argument("--scorer", default=defaults.SCORER, help="scorer of --source and --pool answers (name or module:function)")
    e.add_argument(
        "--estimators",
        default="",
        help="comma-separated subset of: " + "; ".join(f"{n} ({spec.help})" for n, spec in ESTIMATORS.items()),
    )
    e.add_argument(
        "--sigma", type=positive_float, default=None, help="posterior scale for the disagreement estimators (absolute)"
    )
    e.add_argument("--space", default="delta", choices=("delta", "lora"), help="posterior space")
    e.add_argument(
        "--draws", type=int, default=defaults.LABEL_FREE_DRAWS, help="independent posterior draws per prompt"
    )
    e.add_argument("--seed-adapters", nargs="*", default=[], help="adapters trained like --adapter with other seeds")
    e.add_argument("--delta", type=positive_float, default=defaults.DELTA, help="each interval is at level 1 - delta")
    e.add_argument("--beta", type=positive_float, default=1.0, help="da_2016: assumed density-ratio moment beta_q")
    e.add_argument("--q", type=positive_float, default=math.inf, help="da_2016: the moment's order q > 1 (inf)")
    e.add_argument(
        "--n-boot", type=int, default=defaults.LABEL_FREE_N_BOOT, help="bootstrap resamples (seed, ATC, DoC)"
    )
    e.add_argument("--seed", type=int, default=0, help="seed of the posterior draws, TV folds and bootstrap")
    e.add_argument("--out", default="", help="CSV file for the table (written only when every row is done)")
    add_options(e, TVConfig, prefix="tv_")
    add_options(e, EvalConfig, prefix="eval_", exclude=("generate",))
    e.set_defaults(func=_cmd_estimate)
