"""``certify``, ``pretrain``, ``finetune`` and ``evaluate``: one model or adapter at a time."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from .. import console
from ..adapters import attach_adapter
from ..bounds import is_vacuous
from ..certify import BoundConfig, CertifySettings, EvalConfig, PriorConfig, TVConfig, certify
from ..config import add_options, options_from_args
from ..data.igsm import IGSMConfig, test_slices
from ..data.igsm_verify import igsm_judge
from ..data.loaders import load_examples
from ..data.tokenizer import load_tokenizer
from ..sweep import certify_cell
from ..training.evaluate import evaluate_slices
from ..training.models import load_causal_lm
from ..training.pretrain import PretrainConfig, pretrain
from ..training.sft import SFTConfig, finetune
from .common import read_examples


def _cmd_certify(args: argparse.Namespace) -> int:
    if args.run or args.cell:
        if not (args.run and args.cell):
            raise ValueError("--run and --cell go together: a sweep directory and one of its cell ids")
        return _write_certificate(certify_cell(args.run, args.cell, progress=console.show_progress()), args.out)
    missing = [f"--{k}" for k in ("base", "adapter", "train", "test") if not getattr(args, k)]
    if missing:
        raise ValueError(f"certify needs {', '.join(missing)} (or --run DIR --cell ID for a sweep's cell)")
    prior = PriorConfig(kind="grid", adapter=args.prior_adapter, n_prior=args.n_prior) if args.prior_adapter else None
    cert = certify(
        args.base,
        args.adapter,
        read_examples(args.train, "train"),
        read_examples(args.test, "test"),
        bound=options_from_args(BoundConfig, args),
        tv=options_from_args(TVConfig, args, prefix="tv_"),
        evaluation=options_from_args(EvalConfig, args, prefix="eval_"),
        prior=prior,
        settings=CertifySettings(seed=args.seed, progress=console.show_progress()),
    )
    return _write_certificate(cert, args.out)


def _write_certificate(cert, path: str) -> int:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cert.to_dict(), indent=2))
    _print_certificate(cert)
    print(f"json: {out}")
    return 0


def _print_certificate(cert) -> None:
    tv = cert.tv
    vacuous = is_vacuous(cert.empirical_risk.mc_upper, cert.g_gen.seeger)
    rows = [
        ("n", f"{cert.n}"),
        ("empirical risk (point)", f"{cert.empirical_risk.point:.4f}"),
        ("empirical risk (MC upper, certified)", f"{cert.empirical_risk.mc_upper:.4f}"),
        (f"KL ({cert.kl.space} space, nats)", f"{cert.kl.value_nats:.4g}"),
        ("sigma", f"{cert.sigma.value:g} ({cert.sigma.rule})"),
        ("G_gen Seeger (certified)", "vacuous: MC upper + G_gen = 1" if vacuous else f"{cert.g_gen.seeger:.4f}"),
        ("G_gen Maurer (certified)", f"{cert.g_gen.maurer:.4f}"),
        ("TV estimate" + ("" if tv.certified else " (proxy)"), f"{tv.estimate:.4f}"),
    ]
    if tv.lower is not None:
        rows.append(("TV lower bound / p-value", f"{tv.lower:.4f} / {tv.p_value:.3g}"))
    rows += [
        ("G_ext" + ("" if tv.certified else " (estimate)"), f"{cert.g_ext:.4f}"),
        ("total" + ("" if cert.certified else " (estimate, NOT certified)"), f"{cert.total:.4f}"),
        (
            "delta",
            f"{cert.delta.total} split as "
            + ", ".join(f"{e['term']}={e['delta']:.3g}" for e in cert.delta.ledger["entries"]),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(cert.statement())


def pretrain_config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The PretrainConfig that ``pacbayes-sft pretrain`` builds from its parsed arguments
    (one option per config field, ``--ops`` comma-separated)."""
    return options_from_args(PretrainConfig, args)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    meta = pretrain(pretrain_config_from_args(args), args.out, log=console.log.info)
    print(
        f"pretrained {meta['parameters']} parameters for {meta['steps']} steps in {meta['minutes']:.1f} min "
        f"({meta['tokens_per_s']:.0f} tokens/s); saved to {args.out}"
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    train = read_examples(args.train, "train")
    cfg = options_from_args(SFTConfig, args)
    tok = load_tokenizer(args.base)
    res = finetune(args.base, tok, [e["prompt"] for e in train], [e["response"] for e in train], cfg, args.out)
    print(
        f"{args.objective} on {len(train)} examples: {res.log['steps']} steps in {res.log['seconds']:.1f} s "
        f"({res.log['tokens_per_s']:.0f} tokens/s); adapter saved to {args.out}"
    )
    return 0


def _evaluation_slices(args: argparse.Namespace):
    """The slices ``evaluate`` scores and their judge: a file's difficulty column (no judge), or
    generated iGSM test slices judged by the verifier."""
    if args.data:
        slices: dict = {}
        for e in load_examples(args.data):
            slices.setdefault(e.get("difficulty", "all"), []).append(e)
        return slices, None
    ops = [int(x) for x in args.ops.split(",")]
    mod = args.modulus
    slices = test_slices(ops, args.n, seed=args.seed, config=IGSMConfig(modulus=mod))
    return slices, igsm_judge(mod)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    model, name = load_causal_lm(args.base), "base"
    if args.adapter:
        model, name = attach_adapter(model, args.adapter), Path(args.adapter).name
    slices, judge = _evaluation_slices(args)
    tok = load_tokenizer(args.base)
    rows = evaluate_slices(model, tok, slices, model_name=name, judge=judge, generate=not args.no_generate)
    df = pd.DataFrame(rows)
    print(df.pivot(index="slice", columns="metric", values="value").round(4).to_string())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)
        print(f"rows: {args.out}")
    return 0


def _add_certify(sub) -> None:
    c = sub.add_parser("certify", help="two-gap certificate for one adapter: every term of Prop. 4.1, table + JSON")
    c.add_argument("--run", default="", help="a sweep's output directory: certify one of its cells (with --cell)")
    c.add_argument("--cell", default="", help="the cell id, e.g. base__sft__n128__hard__s0 (with --run)")
    c.add_argument("--base", default="", help="base model directory (config.json, safetensors, tokenizer)")
    c.add_argument("--adapter", default="", help="LoRA adapter directory trained on --train")
    c.add_argument(
        "--train", default="", help="the adapter's training examples (.jsonl/.csv/.parquet: prompt, response[, answer])"
    )
    c.add_argument("--test", default="", help="test examples, same format")
    c.add_argument("--out", default="certificate.json", help="where to write the JSON document")
    c.add_argument("--seed", type=int, default=0, help="random seed")
    c.add_argument(
        "--prior-adapter",
        default="",
        help="data-dependent prior: an adapter trained on the first --n-prior training examples only",
    )
    c.add_argument("--n-prior", type=int, default=0, help="examples the prior adapter was trained on (excluded from n)")
    add_options(c, BoundConfig)
    add_options(c, TVConfig, prefix="tv_")
    add_options(c, EvalConfig, prefix="eval_", exclude=("generate",))
    c.set_defaults(func=_cmd_certify)


def add_commands(sub) -> None:
    _add_certify(sub)
    pt = sub.add_parser("pretrain", help="pretrain a base model from scratch on the synthetic iGSM-style task")
    pt.add_argument("--out", required=True, help="output directory (model, tokenizer, pretrain.json)")
    add_options(pt, PretrainConfig, exclude=("extra",))
    pt.set_defaults(func=_cmd_pretrain)

    ft = sub.add_parser("finetune", help="LoRA-fine-tune a base model on a data file (SFT or DFT)")
    ft.add_argument("--base", required=True, help="base model directory")
    ft.add_argument("--train", required=True, help="training examples (.jsonl/.csv/.parquet with prompt, response)")
    ft.add_argument("--out", required=True, help="adapter output directory")
    add_options(ft, SFTConfig)
    ft.set_defaults(func=_cmd_finetune)

    ev = sub.add_parser("evaluate", help="evaluate a base model (and optionally an adapter) by difficulty slice")
    ev.add_argument("--base", required=True, help="base model directory")
    ev.add_argument("--adapter", default="", help="LoRA adapter directory (optional)")
    ev.add_argument(
        "--data", default="", help="examples file with a difficulty column (default: generated iGSM test slices)"
    )
    ev.add_argument("--ops", default="1,2,3,4,5,6,8", help="op slices to generate when --data is not given")
    ev.add_argument("--n", type=int, default=200, help="examples per generated slice")
    ev.add_argument("--modulus", type=int, default=7, help="arithmetic modulus of the generated task")
    ev.add_argument("--no-generate", action="store_true", help="skip greedy generation (teacher-forced metrics only)")
    ev.add_argument("--out", default="", help="CSV file for the tidy rows")
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated test slices (slice k: seed + k)")
    ev.set_defaults(func=_cmd_evaluate)
