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
    from .bounds import BOUNDS, two_gap_bound

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
    certified = "certified" if rows[0]["certified"] else "an estimate (TV is a proxy, not certified)"
    print(f"total is {certified}; KL = {args.kl} nats, n = {args.n}, delta = {args.delta}")
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

    from .sweep import load_config

    cfg = load_config(args.config)
    base = cfg["bases"][0]["path"]
    t0 = time.perf_counter()
    rc = _cmd_sweep(argparse.Namespace(config=args.config, out=args.out, shard="0/1", report=False, quiet=args.quiet))
    if rc:
        return rc
    rc = _cmd_report(argparse.Namespace(dir=args.out))
    print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min (base model: {base})")
    return rc


def _cmd_adapter_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    doc = run_demo(args.out, n=args.n, steps=args.steps, seed=args.seed, m=args.m)
    import pandas as pd

    table = pd.DataFrame(doc["bounds"])
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    tg = doc["two_gap"]
    print()
    print(
        f"best sigma {doc['best']['sigma']:g}: two-gap bound (Prop. 4.1, Seeger) = "
        f"{tg['emp_risk']:.4f} (MC risk upper) + {tg['g_gen']:.4f} (G_gen) + {tg['g_ext']:.4f} (G_ext) "
        f"= {tg['total']:.4f}"
    )
    print(f"measured test risk {doc['measured_test_risk']:.4f}; point train risk {doc['point_train_risk']:.4f}")
    print(
        "certified: empirical-risk MC bound and G_gen; estimate: G_ext (histogram-TV proxy), so the total is not certified"
    )
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def _read_examples(path: str, what: str) -> list[dict]:
    from .data.loaders import load_examples

    try:
        return load_examples(path)
    except ValueError as exc:
        raise ValueError(f"--{what}: {exc}") from None


def _cmd_certify(args: argparse.Namespace) -> int:
    from .certify import certify

    train = _read_examples(args.train, "train")
    test = _read_examples(args.test, "test")
    sigmas = [float(x) for x in args.sigmas.split(",")] if args.sigmas else None
    kwargs = {"sigmas": sigmas} if sigmas else {}
    _tg, doc = certify(
        args.base,
        args.adapter,
        train,
        test,
        space=args.space,
        delta=args.delta,
        m=args.m,
        mc_scheme=args.mc_scheme,
        loss=args.loss,
        seed=args.seed,
        tv_permutations=args.tv_permutations,
        **kwargs,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    rows = [
        ("n", f"{doc['n']}"),
        ("empirical risk (point)", f"{doc['empirical_risk']['point']:.4f}"),
        ("empirical risk (MC upper, certified)", f"{doc['empirical_risk']['mc_upper']:.4f}"),
        (f"KL ({doc['kl']['space']} space, nats)", f"{doc['kl']['value_nats']:.4g}"),
        ("sigma", f"{doc['sigma']['value']:g} ({doc['sigma']['rule']})"),
        ("G_gen Seeger (certified)", f"{doc['g_gen']['seeger']:.4f}"),
        ("G_gen Maurer (certified)", f"{doc['g_gen']['maurer']:.4f}"),
        ("TV estimate (proxy)", f"{doc['tv']['estimate']:.4f}"),
        ("TV lower bound / p-value", f"{doc['tv']['lower']:.4f} / {doc['tv']['p_value']:.3g}"),
        ("G_ext (estimate)", f"{doc['g_ext']:.4f}"),
        ("total (estimate, NOT certified)", f"{doc['total']:.4f}"),
        (
            "delta",
            f"{doc['delta']['total']} split as "
            + ", ".join(f"{e['term']}={e['delta']:.3g}" for e in doc["delta"]["ledger"]["entries"]),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"json: {out}")
    return 0


def pretrain_config_from_args(args: argparse.Namespace):
    """The PretrainConfig that ``pacbayes-sft pretrain`` builds from its parsed arguments
    (one option per config field, ``--ops`` comma-separated)."""
    from dataclasses import fields

    from .training.pretrain import PretrainConfig

    kw = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if f.name not in ("ops", "extra")}
    return PretrainConfig(ops=tuple(int(x) for x in args.ops.split(",")), **kw)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .training.pretrain import pretrain

    meta = pretrain(pretrain_config_from_args(args), args.out)
    print(
        f"pretrained {meta['parameters']} parameters for {meta['steps']} steps in {meta['minutes']:.1f} min "
        f"({meta['tokens_per_s']:.0f} tokens/s); saved to {args.out}"
    )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .data.tokenizer import load_tokenizer
    from .training.sft import SFTConfig, finetune

    train = _read_examples(args.train, "train")
    cfg = SFTConfig(
        objective=args.objective,
        r=args.r,
        alpha=args.alpha,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        use_rslora=args.rslora,
    )
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


def _cmd_sweep(args: argparse.Namespace) -> int:
    import logging

    from .sweep import load_config, run_sweep

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(args.config)
    summary = run_sweep(cfg, args.out, shard=_parse_shard(args.shard), progress=not args.quiet)
    print(
        f"sweep {cfg['name']}: {summary['ran']} cells run, {summary['skipped']} already finished, "
        f"{summary['in_shard']} in shard {args.shard} of {summary['cells']}; results in {args.out}"
    )
    if args.report:
        return _cmd_report(argparse.Namespace(dir=args.out))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    rep = build_report(args.dir)
    opt = rep["optimum"]
    cols = ["base", "objective", "n", "observed", "raw_bound", "calibrated", "seed_idx_min", "seed_idx_max"]
    print(opt[cols].to_string(index=False))
    s = rep["summary"]
    print(
        f"agreement with the observed optimum: raw bound exact {s['raw_exact_agreement']:.2f} / within one "
        f"{s['raw_within_one']:.2f}; calibrated exact {s['calibrated_exact_agreement']:.2f} / within one "
        f"{s['calibrated_within_one']:.2f}"
    )
    print(
        f"Spearman(total, test risk) {s['spearman_total_vs_test_risk']:.3f}; "
        f"Spearman(calibrated, test risk) {s['spearman_calibrated_vs_test_risk']:.3f}; "
        f"optimum moves harder with n: {s['observed_optimum_moves_harder_with_n']}"
    )
    print("certified: MC training-risk bound and G_gen; estimated: G_ext (TV proxy) -> totals are not certified")
    print(f"report: {rep['report_md']} (and {rep['report_html']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pacbayes-sft", description="PAC-Bayes bound terms for LoRA fine-tuning runs.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

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

    dm = sub.add_parser("demo", help="the main job: the demo (n x difficulty) sweep on the shipped base and its report")
    dm.add_argument("--config", default="demo", help="config (default: experiments/configs/demo.yaml)")
    dm.add_argument("--out", default="runs/demo", help="output directory (resumable)")
    dm.add_argument("--quiet", action="store_true", help="no progress bars")
    dm.set_defaults(func=_cmd_demo)

    d = sub.add_parser(
        "adapter-demo", help="train a LoRA adapter on a tiny from-config model and print its bound report"
    )
    d.add_argument("--out", default="runs/adapter_demo", help="output directory (adapter + report.json)")
    d.add_argument("--n", type=int, default=512, help="training examples")
    d.add_argument("--steps", type=int, default=150, help="optimizer steps")
    d.add_argument("--m", type=int, default=32, help="posterior samples per sigma for the MC risk")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.set_defaults(func=_cmd_adapter_demo)
    sw = sub.add_parser(
        "sweep", help="run (or resume) an (n x difficulty x seed x objective) grid of LoRA fine-tunings"
    )
    sw.add_argument(
        "--config", required=True, help="YAML/JSON config file, or a name in experiments/configs (demo, quick, paper)"
    )
    sw.add_argument("--out", required=True, help="output directory; re-running resumes, skipping finished cells")
    sw.add_argument("--shard", default="0/1", help="run part i of N (i/N), for several processes or machines")
    sw.add_argument("--report", action="store_true", help="build the report when done")
    sw.add_argument("--quiet", action="store_true", help="no progress bars")
    sw.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="merge a sweep's cells (all shards) into tables, plots and report.md/html")
    rp.add_argument("dir", help="the sweep's output directory")
    rp.set_defaults(func=_cmd_report)

    c = sub.add_parser("certify", help="two-gap certificate for one adapter: every term of Prop. 4.1, table + JSON")
    c.add_argument("--base", required=True, help="base model directory (config.json, safetensors, tokenizer)")
    c.add_argument("--adapter", required=True, help="LoRA adapter directory trained on --train")
    c.add_argument(
        "--train", required=True, help="the adapter's training examples (.jsonl/.csv/.parquet: prompt, response)"
    )
    c.add_argument("--test", required=True, help="test examples, same format")
    c.add_argument("--out", default="certificate.json", help="where to write the JSON document")
    c.add_argument("--space", choices=["delta", "lora"], default="delta", help="parameter space of the Gaussians")
    c.add_argument("--sigmas", default="", help="comma-separated sigma grid (default 1e-3,3e-3,1e-2,3e-2)")
    c.add_argument("--delta", type=float, default=0.05, help="total failure probability")
    c.add_argument(
        "--m",
        type=int,
        default=None,
        help="posterior draws per sigma: per example with --mc-scheme per_example (default 1), "
        "shared by all examples with --mc-scheme shared (default 20)",
    )
    c.add_argument(
        "--mc-scheme",
        choices=["per_example", "shared"],
        default="per_example",
        help="per_example: every training example gets its own posterior draws (n*m independent losses); "
        "shared: m samples each score every example (m independent risks)",
    )
    c.add_argument("--loss", choices=["token_error", "sequence_error"], default="token_error", help="bounded loss")
    c.add_argument("--tv-permutations", type=int, default=1000, help="permutations for the TV p-value")
    c.add_argument("--seed", type=int, default=0, help="random seed")
    c.set_defaults(func=_cmd_certify)

    pt = sub.add_parser("pretrain", help="pretrain a base model from scratch on the synthetic iGSM-style task")
    pt.add_argument("--out", required=True, help="output directory (model, tokenizer, pretrain.json)")
    pt.add_argument("--ops", default="1,2,3,4", help="operation counts seen in pretraining, comma-separated")
    pt.add_argument("--modulus", type=int, default=7, help="arithmetic modulus (a prime)")
    pt.add_argument("--hidden", type=int, default=128, help="model width")
    pt.add_argument("--layers", type=int, default=4, help="transformer blocks")
    pt.add_argument("--heads", type=int, default=4, help="attention heads")
    pt.add_argument("--intermediate", type=int, default=512, help="MLP width")
    pt.add_argument("--batch-size", type=int, default=32, help="problems per step")
    pt.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    pt.add_argument("--steps", type=int, default=100000, help="maximum steps")
    pt.add_argument("--max-minutes", type=float, default=60.0, help="wall-clock budget in minutes")
    pt.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    pt.add_argument(
        "--arch", choices=["llama", "gpt2"], default="llama", help="rotary Llama or GPT-2 (learned positions)"
    )
    pt.add_argument(
        "--recall-fraction",
        type=float,
        default=0.0,
        help="fraction of problems replaced by retrieval drills (restate named statements)",
    )
    pt.add_argument("--recall-max", type=int, default=5, help="most names asked for in one retrieval drill")
    pt.add_argument(
        "--prompt-loss", type=float, default=0.0, help="weight of the loss on prompt tokens (0 = response only)"
    )
    pt.add_argument(
        "--position-offset", type=int, default=256, help="gpt2: random start position in [0, this] per sequence"
    )
    pt.add_argument("--warmup", type=int, default=200, help="linear warm-up steps before the cosine decay")
    pt.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    pt.add_argument("--seed", type=int, default=0, help="random seed")
    pt.add_argument(
        "--checkpoint-minutes", type=float, default=10.0, help="save a checkpoint this often (minutes of wall time)"
    )
    pt.add_argument(
        "--init-from",
        default="",
        help="continue from this saved model's weights (fresh optimizer and schedule); empty = from scratch",
    )
    pt.set_defaults(func=_cmd_pretrain)

    ft = sub.add_parser("finetune", help="LoRA-fine-tune a base model on a data file (SFT or DFT)")
    ft.add_argument("--base", required=True, help="base model directory")
    ft.add_argument("--train", required=True, help="training examples (.jsonl/.csv/.parquet with prompt, response)")
    ft.add_argument("--out", required=True, help="adapter output directory")
    ft.add_argument("--objective", choices=["sft", "dft"], default="sft", help="cross-entropy or DFT")
    ft.add_argument("--r", type=int, default=8, help="LoRA rank")
    ft.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    ft.add_argument("--rslora", action="store_true", help="rank-stabilised scaling alpha/sqrt(r)")
    ft.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ft.add_argument("--epochs", type=float, default=3.0, help="passes over the data")
    ft.add_argument("--max-steps", type=int, default=-1, help="optimizer steps (overrides --epochs when > 0)")
    ft.add_argument("--batch-size", type=int, default=16, help="examples per step")
    ft.add_argument("--seed", type=int, default=0, help="random seed")
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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
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
