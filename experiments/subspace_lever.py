"""Issue 11, the random-subspace lever: LoRA factors trained only along d random directions
(θ = θ₀ + P z), the Gaussian prior N(0, σ²I_d) and posterior N(z*, σ²I_d) in the subspace, certified
on the op 5-6 cell (n = 512, token error) with a σ grid fixed in advance.

    python experiments/subspace_lever.py --dim 500 --steps 150     # a few minutes on 2 CPU cores
    python experiments/subspace_lever.py --dim 500 --steps 150 --data-dependent

``--data-dependent`` combines the lever with a data-dependent prior: z is trained on the first half
of S, the prior is centred there (N(z_p, σ²I_d)), training continues on the second half, and the
bound uses only that half.

The certificate is written to ``--out`` (default runs/prior_levers, beside the other levers'
certificates, which experiments/lever_table.py reads).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pacbayes_sft.certify import (
    BoundConfig,
    GridOptions,
    PosteriorFamily,
    certificate_core,
    plan_delta,
    teacher_forced_losses,
)
from pacbayes_sft.certify.certificate import TVTerm
from pacbayes_sft.data import generate, test_set
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.sweep.config import SHIPPED_BASE
from pacbayes_sft.training.models import attach_lora, load_causal_lm
from pacbayes_sft.training.subspace import SubspacePosterior, train_subspace

GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]  # σ in the subspace, fixed before training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dim", type=int, default=500)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--out", default="runs/prior_levers")
    ap.add_argument("--data-dependent", action="store_true", help="prior centred at z trained on the first half")
    args = ap.parse_args()
    tok = load_tokenizer(SHIPPED_BASE)
    train = generate(512, [5, 6], split="train", seed=7)
    test = test_set(range(1, 9), 40, seed=12345)  # 40 per op
    model = attach_lora(load_causal_lm(SHIPPED_BASE), r=8, alpha=16.0, seed=0)
    sub, train = _train(model, tok, train, args)
    fam = PosteriorFamily(
        f"subspace (d={args.dim})", GRID, lambda s, seed: SubspacePosterior(sub, model, s, seed=seed), sub.kl
    )
    cfg = BoundConfig(sigmas=GRID, m=1, loss="token_error")
    losses = teacher_forced_losses(tok, [p.prompt for p in train], [p.response for p in train], cfg.loss)
    kind = "data-dependent" if args.data_dependent else "data-free"
    centre = "z trained on the first half of S" if args.data_dependent else "z = 0 (the adapter's init)"
    cert = certificate_core(
        model,
        losses,
        TVTerm.plain(0.0, len(train), len(test), "not used"),
        cfg,
        plan_delta(cfg, len(train), tv_interval=False, prior_note=f"subspace prior centred at {centre}"),
        options=GridOptions(family=fam),
        prior_info={"kind": kind, "centre": centre} | ({"n_prior": 512 - len(train)} if args.data_dependent else {}),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_data-dependent" if args.data_dependent else ""
    (out / f"certificate_subspace_d{args.dim}{suffix}.json").write_text(json.dumps(cert.to_dict(), indent=1))
    hard = [p for p in test if p.op in (5, 6)]
    row = {
        "posterior": f"subspace d={args.dim}",
        "n_bound": cert.n,
        "sigma": cert.sigma.value,
        "KL (nats)": cert.kl.value_nats,
        "point train risk": cert.empirical_risk.point,
        "MC train risk": cert.empirical_risk.mc_mean,
        "U_MC": cert.empirical_risk.mc_upper,
        "Seeger bound": cert.empirical_risk.mc_upper + cert.g_gen.seeger,
    }
    for name, ex in (("stoch. test risk", test), ("stoch. op 5-6 risk", hard)):
        tl = teacher_forced_losses(tok, [p.prompt for p in ex], [p.response for p in ex], "token_error")
        post = SubspacePosterior(sub, model, cert.sigma.value, seed=99)
        from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example

        row[name] = mc_stochastic_risk_per_example(post, tl.example, tl.n, 1, 0.05).mean
        row[name.replace("stoch.", "point")] = tl.risk(model)
    print(pd.DataFrame([row]).to_markdown(index=False, floatfmt=".4g"))
    print(
        pd.DataFrame(cert.grid)[["sigma", "kl", "mc_mean_risk", "mc_risk_upper", "seeger"]].to_markdown(
            index=False, floatfmt=".4g"
        )
    )


def _train(model, tok, train, args):
    """Train z on S (data-free prior) or on its first half, fix the prior there, and continue on
    the second half (data-dependent prior). Returns the subspace and the examples the bound uses."""
    first, bound = (train[: len(train) // 2], train[len(train) // 2 :]) if args.data_dependent else ([], train)
    sub = None
    for part in (first, bound):
        if not part:
            continue
        if sub is not None:
            sub.fix_prior_centre()
        steps = args.steps if sub is None else args.steps // 2
        sub, hist = train_subspace(
            model, tok, [p.prompt for p in part], [p.response for p in part],
            dim=args.dim, steps=steps, lr=args.lr, batch_size=32, subspace=sub,
        )  # fmt: skip
        print(f"subspace SFT loss {hist[0]:.3f} -> {sum(hist[-10:]) / 10:.3f}; ||z|| = {sub.z.detach().norm():.3f}")
    print(f"||z* - z_p|| = {(sub.z.detach() - sub.centre).norm():.3f}", flush=True)
    return sub, bound


if __name__ == "__main__":
    main()
