"""``bound`` and ``kl``: bound terms from numbers, or from an adapter file."""

from __future__ import annotations

import argparse
import json

from .. import defaults
from ..bounds import BOUNDS, certification_statement, two_gap_bound
from ..certify.config import SPACES
from ..estimators import lora_delta_sq_norms, lora_kl
from .common import positive_float


def _cmd_bound(args: argparse.Namespace) -> int:
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
    kl = lora_kl(args.adapter, args.sigma, space=args.space)
    out = {"adapter": args.adapter, "sigma": args.sigma, "space": args.space, "kl_nats": kl}
    if args.per_module and args.space == "delta":
        out["delta_sq_norm_per_module"] = lora_delta_sq_norms(args.adapter)
    print(json.dumps(out, indent=2))
    return 0


def add_commands(sub) -> None:
    b = sub.add_parser("bound", help="two-gap bound (Prop. 4.1) for every PAC-Bayes method from numbers")
    b.add_argument("--emp-risk", type=float, required=True, help="empirical (stochastic) risk, in the loss range")
    b.add_argument("--kl", type=float, required=True, help="KL(posterior || prior) in nats")
    b.add_argument("--n", type=float, required=True, help="number of training examples")
    b.add_argument("--tv", type=float, required=True, help="TV(D_test, D_train) or a proxy of it, in [0, 1]")
    b.add_argument("--delta", type=float, default=defaults.DELTA, help=f"confidence parameter (default {defaults.DELTA})")
    b.add_argument("--eps", type=float, default=0.0, help="extra slack added to the total")
    b.add_argument("--loss-min", type=float, default=0.0, help="lower end a of the loss range")
    b.add_argument("--loss-max", type=float, default=1.0, help="upper end b of the loss range")
    b.add_argument("--catoni-c", type=positive_float, default=defaults.CATONI_C, help="Catoni's C, fixed in advance")
    b.add_argument("--tv-certified", action="store_true", help="the TV value is a certified upper bound")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.set_defaults(func=_cmd_bound)

    k = sub.add_parser("kl", help="KL of a saved LoRA adapter for an isotropic Gaussian of scale sigma")
    k.add_argument("--adapter", required=True, help="adapter directory (adapter_config.json + weights)")
    k.add_argument("--sigma", type=positive_float, required=True, help="standard deviation sigma > 0")
    k.add_argument(
        "--space",
        choices=SPACES,
        default="delta",
        help="'delta': prior at the pretrained weights; 'lora': prior at the adapter's init "
        "(needs lora_init.safetensors in the adapter directory)",
    )
    k.add_argument("--per-module", action="store_true", help="also print ||dW||_F^2 per module")
    k.set_defaults(func=_cmd_kl)
