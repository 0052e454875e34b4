"""`pacbayes-sft` command line.

Every error from bad input ends the command with one readable line on stderr and exit
status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + exits 2; keep it to one line
        raise CLIError(f"{self.prog}: {message}")


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def _cmd_bound(args: argparse.Namespace) -> int:
    from .bounds import BOUNDS, certification_statement, two_gap_bound

    rows = []
    for method in BOUNDS:
        tg = two_gap_bound(
            args.emp_risk,
            args.kl,
            args.n,
            args.tv,
            delta=args.delta,
            method=method,
            loss_range=(args.loss_min, args.loss_max),
            eps=args.eps,
            C=args.catoni_c,
            tv_certified=args.tv_certified,
        )
        rows.append(tg.to_dict())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'method':<8} {'emp_risk':>9} {'g_gen':>9} {'g_ext':>9} {'eps':>7} {'total':>9}")
    for r in rows:
        print(
            f"{r['method']:<8} {r['emp_risk']:>9.4f} {r['g_gen']:>9.4f} {r['g_ext']:>9.4f} {r['eps']:>7.4f} {r['total']:>9.4f}"
        )
    print(f"{certification_statement(tg)}; KL = {args.kl} nats, n = {args.n}, delta = {args.delta}")
    return 0


def _cmd_kl(args: argparse.Namespace) -> int:
    from .estimators import lora_delta_sq_norms, lora_kl

    kl = lora_kl(args.adapter, args.sigma, space=args.space)
    out = {"adapter": args.adapter, "sigma": args.sigma, "space": args.space, "kl_nats": kl}
    if args.per_module and args.space == "delta":
        out["delta_sq_norm_per_module"] = lora_delta_sq_norms(args.adapter)
    print(json.dumps(out, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job: the demo sweep on the shipped base, then its report."""
    import time

    from .sweep.runner import load_config

    cfg = load_config(args.config)
    base = cfg.bases[0].path
    t0 = time.perf_counter()
    rc = _cmd_sweep(argparse.Namespace(config=args.config, out=args.out, shard="0/1", report=False))
    if rc:
        return rc
    rc = _cmd_report(argparse.Namespace(dir=args.out))
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min (base model: {base})")
    return rc


def _cmd_adapter_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    from .bounds import BOUNDS
    from .certify.certificate import Certificate
    from .demo import run_demo

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


def _read_examples(path: str, what: str) -> list[dict]:
    from .data.loaders import load_examples

    try:
        return load_examples(path)
    except ValueError as exc:
        raise ValueError(f"--{what}: {exc}") from None


def _cmd_certify(args: argparse.Namespace) -> int:
    from . import console
    from .certify.api import BoundConfig, TVConfig, certify
    from .config import options_from_args

    if args.run or args.cell:
        if not (args.run and args.cell):
            raise ValueError("--run and --cell go together: a sweep directory and one of its cell ids")
        from .sweep.runner import certify_cell

        return _write_certificate(certify_cell(args.run, args.cell, progress=console.show_progress()), args.out)
    missing = [f"--{k}" for k in ("base", "adapter", "train", "test") if not getattr(args, k)]
    if missing:
        raise ValueError(f"certify needs {', '.join(missing)} (or --run DIR --cell ID for a sweep's cell)")
    train = _read_examples(args.train, "train")
    test = _read_examples(args.test, "test")
    bound = options_from_args(BoundConfig, args)
    tv = options_from_args(TVConfig, args, prefix="tv_")
    prior = {"prior_adapter": args.prior_adapter, "n_prior": args.n_prior} if args.prior_adapter else {}
    cert = certify(
        args.base,
        args.adapter,
        train,
        test,
        bound=bound,
        tv=tv,
        seed=args.seed,
        progress=console.show_progress(),
        **prior,
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
    rows = [
        ("n", f"{cert.n}"),
        ("empirical risk (point)", f"{cert.empirical_risk.point:.4f}"),
        ("empirical risk (MC upper, certified)", f"{cert.empirical_risk.mc_upper:.4f}"),
        (f"KL ({cert.kl.space} space, nats)", f"{cert.kl.value_nats:.4g}"),
        ("sigma", f"{cert.sigma.value:g} ({cert.sigma.rule})"),
        ("G_gen Seeger (certified)", f"{cert.g_gen.seeger:.4f}"),
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


def pretrain_config_from_args(args: argparse.Namespace):
    """The PretrainConfig that ``pacbayes-sft pretrain`` builds from its parsed arguments
    (one option per config field, ``--ops`` comma-separated)."""
    from .config import options_from_args
    from .training.pretrain import PretrainConfig

    return options_from_args(PretrainConfig, args)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from . import console
    from .training.pretrain import pretrain

    meta = pretrain(pretrain_config_from_args(args), args.out, log=console.log.info)
    print(
        f"pretrained {meta['parameters']} parameters for {meta['steps']} steps in {meta['minutes']:.1f} min "
        f"({meta['tokens_per_s']:.0f} tokens/s); saved to {args.out}"
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .config import options_from_args
    from .data.tokenizer import load_tokenizer
    from .training.sft import SFTConfig, finetune

    train = _read_examples(args.train, "train")
    cfg = options_from_args(SFTConfig, args)
    tok = load_tokenizer(args.base)
    res = finetune(args.base, tok, [e["prompt"] for e in train], [e["response"] for e in train], cfg, args.out)
    print(
        f"{args.objective} on {len(train)} examples: {res.log['steps']} steps in {res.log['seconds']:.1f} s "
        f"({res.log['tokens_per_s']:.0f} tokens/s); adapter saved to {args.out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import pandas as pd

    from .data.igsm import IGSMConfig, generate, verify
    from .data.tokenizer import load_tokenizer
    from .training.evaluate import evaluate_slices
    from .training.models import load_causal_lm

    model = load_causal_lm(args.base)
    name = "base"
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).eval()
        name = Path(args.adapter).name
    tok = load_tokenizer(args.base)
    mod = args.modulus
    if args.data:
        from .data.loaders import load_examples

        ex = load_examples(args.data)
        slices: dict = {}
        for e in ex:
            slices.setdefault(e.get("difficulty", "all"), []).append(e)
        verifier = None
    else:
        ops = [int(x) for x in args.ops.split(",")]
        slices = {op: generate(args.n, op, split="test", seed=args.seed, config=IGSMConfig(modulus=mod)) for op in ops}

        def verifier(p, o):
            return verify(p, o, mod).answer_correct

    rows = evaluate_slices(model, tok, slices, model_name=name, verifier=verifier, generate=not args.no_generate)
    df = pd.DataFrame(rows)
    print(df.pivot(index="slice", columns="metric", values="value").round(4).to_string())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False)
        print(f"rows: {args.out}")
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/N needs 0 <= i < N, got {text!r}")
    return i, n


def _parse_only(items: list[str] | None) -> dict[str, list[str]]:
    only: dict[str, list[str]] = {}
    for item in items or []:
        field, sep, values = item.partition("=")
        if not sep or not field or not values:
            raise ValueError(f"--only must look like FIELD=V1,V2 (e.g. objective=dft), got {item!r}")
        only.setdefault(field.strip(), []).extend(v.strip() for v in values.split(","))
    return only


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import console
    from .sweep.runner import load_config, run_sweep

    cfg = load_config(args.config)
    only = _parse_only(getattr(args, "only", None))
    summary = run_sweep(
        cfg,
        args.out,
        shard=_parse_shard(args.shard),
        only=only,
        update=bool(getattr(args, "update", False)),
        progress=console.show_progress(),
    )
    print(
        f"sweep {cfg.name}: {summary['ran']} cells run, {summary['skipped']} already finished, "
        f"{summary['in_shard']} in shard {args.shard} of {summary['cells']}; results in {args.out}"
    )
    if args.report:
        return _cmd_report(argparse.Namespace(dir=args.out))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .bounds import describe_certification
    from .report.build import build_report
    from .report.pages import summary_lines

    rep = build_report(args.dir)
    opt = rep["optimum"]
    cols = ["base", "objective", "n", "observed", "raw_bound", "calibrated", "seed_idx_min", "seed_idx_max"]
    print(opt[cols].to_string(index=False))
    for line in summary_lines(rep["summary"], len(opt)):
        print(line)
    print(describe_certification(("emp_risk", "g_gen"), ("g_ext",)))
    print(f"report: {rep['report_md']} (and {rep['report_html']})")
    return 0


def _add_number_commands(sub) -> None:
    """``bound`` and ``kl``: terms from numbers or from an adapter file."""
    b = sub.add_parser("bound", help="two-gap bound (Prop. 4.1) for every PAC-Bayes method from numbers")
    b.add_argument("--emp-risk", type=float, required=True, help="empirical (stochastic) risk, in the loss range")
    b.add_argument("--kl", type=float, required=True, help="KL(posterior || prior) in nats")
    b.add_argument("--n", type=float, required=True, help="number of training examples")
    b.add_argument("--tv", type=float, required=True, help="TV(D_test, D_train) or a proxy of it, in [0, 1]")
    b.add_argument("--delta", type=float, default=0.05, help="confidence parameter (default 0.05)")
    b.add_argument("--eps", type=float, default=0.0, help="extra slack added to the total")
    b.add_argument("--loss-min", type=float, default=0.0, help="lower end a of the loss range")
    b.add_argument("--loss-max", type=float, default=1.0, help="upper end b of the loss range")
    b.add_argument("--catoni-c", type=_positive_float, default=1.0, help="Catoni's C, fixed in advance")
    b.add_argument("--tv-certified", action="store_true", help="the TV value is a certified upper bound")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.set_defaults(func=_cmd_bound)

    k = sub.add_parser("kl", help="KL of a saved LoRA adapter for an isotropic Gaussian of scale sigma")
    k.add_argument("--adapter", required=True, help="adapter directory (adapter_config.json + weights)")
    k.add_argument("--sigma", type=_positive_float, required=True, help="standard deviation sigma > 0")
    k.add_argument(
        "--space",
        choices=["delta", "lora"],
        default="delta",
        help="'delta': prior at the pretrained weights; 'lora': prior at the adapter's init "
        "(needs lora_init.safetensors in the adapter directory)",
    )
    k.add_argument("--per-module", action="store_true", help="also print ||dW||_F^2 per module")
    k.set_defaults(func=_cmd_kl)


def _cmd_forecast(args: argparse.Namespace) -> int:
    from .report.forecast import forecast

    table = forecast(args.dir, args.budget)
    cols = ["bucket", "train_risk", "kl", "tv", "predicted_risk", "lower", "upper"]
    for (base, obj), g in table.groupby(["base", "objective"]):
        best = g.loc[g["best"], "bucket"].iloc[0]
        print(f"{base}/{obj} at n = {args.budget}: predicted best bucket {best}")
        with __import__("pandas").option_context("display.float_format", "{:.3g}".format):
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
    from .report.build import bucket_order
    from .report.item_difficulty import cross_difficulty, item_responses, largest_full_budget, rate_items
    from .sweep.store import folder_config

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


def _add_job_commands(sub) -> None:
    """``demo``, ``adapter-demo``, ``sweep`` and ``report``."""
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
    sw = sub.add_parser(
        "sweep", help="run (or resume) an (n x difficulty x seed x objective) grid of LoRA fine-tunings"
    )
    sw.add_argument(
        "--config", required=True, help=f"YAML/JSON config file, or a name in experiments/configs{_names()}"
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
    sw.set_defaults(func=_cmd_sweep)

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


def _add_model_commands(sub) -> None:
    """``certify``, ``pretrain``, ``finetune`` and ``evaluate``: one model or adapter at a time."""
    from .certify.api import BoundConfig, TVConfig
    from .config import add_options
    from .training.pretrain import PretrainConfig
    from .training.sft import SFTConfig

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
    c.set_defaults(func=_cmd_certify)

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
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated test slices")
    ev.set_defaults(func=_cmd_evaluate)


def _names() -> str:
    """The shipped config names for --config's help ("" when the experiments folder is absent)."""
    from .sweep.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    return f" ({', '.join(names)})" if names else ""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pacbayes-sft", description="PAC-Bayes bound terms for LoRA fine-tuning runs.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    _add_number_commands(sub)
    _add_job_commands(sub)
    _add_model_commands(sub)
    for command in sub.choices.values():
        loud = command.add_mutually_exclusive_group()
        loud.add_argument("--quiet", action="store_true", help="print only results and errors (no progress bars)")
        loud.add_argument("--verbose", action="store_true", help="also print library warnings and Trainer logs")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        from . import console

        console.configure("quiet" if args.quiet else "verbose" if args.verbose else "default")
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"pacbayes-sft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pacbayes-sft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
