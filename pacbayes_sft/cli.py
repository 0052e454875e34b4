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

    d = sub.add_parser("demo", help="train a LoRA adapter on a tiny from-config model and print its bound report")
    d.add_argument("--out", default="runs/demo", help="output directory (adapter + report.json)")
    d.add_argument("--n", type=int, default=512, help="training examples")
    d.add_argument("--steps", type=int, default=150, help="optimizer steps")
    d.add_argument("--m", type=int, default=32, help="posterior samples per sigma for the MC risk")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.set_defaults(func=_cmd_demo)
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
