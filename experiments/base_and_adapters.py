"""The synthetic base per op slice, one SFT and one DFT adapter on a harder bucket, and a certificate.

    .venv/bin/python experiments/base_and_adapters.py --base pacbayes_sft/assets/base_igsm --out runs/base_and_adapters

Prints Markdown tables (the figures in docs/RESULTS.md) and writes the adapters and rows to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from pacbayes_sft.certify import BoundConfig, TVConfig, certify
from pacbayes_sft.data import generate, test_slices, verify
from pacbayes_sft.data.igsm import response_roles
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.training.evaluate import evaluate_slices, teacher_forced_role_errors
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import SFTConfig, finetune

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="pacbayes_sft/assets/base_igsm")
    ap.add_argument("--out", default="runs/base_and_adapters")
    ap.add_argument("--n", type=int, default=512, help="training examples of the harder bucket")
    ap.add_argument("--ops", default="5,6", help="the harder bucket")
    ap.add_argument("--test-n", type=int, default=100, help="test problems per op slice")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(args.base)
    meta = json.loads((Path(args.base) / "pretrain.json").read_text())
    slices = test_slices(range(1, 11), args.test_n, seed=2024)

    def ev(model, name):
        return evaluate_slices(
            model, tok, slices, model_name=name, judge=lambda e, o: verify(e.prompt, o).answer_correct, max_new_tokens=260
        )

    base_model = load_causal_lm(args.base)
    rows = ev(base_model, "base")
    # Which skill the base lacks: teacher-forced error rate per token role, per op slice.
    skills = {}
    for op, probs in slices.items():
        errs = teacher_forced_role_errors(
            base_model,
            tok,
            [p.prompt for p in probs],
            [p.response for p in probs],
            [response_roles(p.response, p.prompt) for p in probs],
        )
        skills[op] = {role: e / c for role, (e, c) in errs.items()}
    skills = pd.DataFrame(skills).T[["schedule", "define", "lookup_prompt", "lookup_solution", "arithmetic"]]
    ops = [int(x) for x in args.ops.split(",")]
    train = generate(args.n, ops, split="train", seed=77)
    logs = {}
    for obj in ("sft", "dft"):
        t0 = time.perf_counter()
        res = finetune(
            load_causal_lm(args.base),
            tok,
            [p.prompt for p in train],
            [p.response for p in train],
            SFTConfig(objective=obj, epochs=3, batch_size=16, lr=2e-3, progress=False),
            out / f"adapter_{obj}",
        )
        logs[obj] = res.log | {"wall": time.perf_counter() - t0}
        rows += ev(res.model, obj)
    df = pd.DataFrame(rows)
    df.to_csv(out / "rows.csv", index=False)
    acc = df[df.metric == "answer_accuracy"].pivot(index="slice", columns="model", values="value")
    acc["sft_change"] = acc["sft"] - acc["base"]
    acc["dft_change"] = acc["dft"] - acc["base"]
    em = df[df.metric == "exact_match"].pivot(index="slice", columns="model", values="value")
    print(
        f"## Base: {meta['parameters']:,} parameters, pretrained on op {meta['config']['ops']} for "
        f"{meta['steps']} steps / {meta['minutes']:.0f} min ({meta['tokens_per_s']:.0f} tokens/s)\n"
    )
    print("### Answer accuracy (greedy generation, verified) per test op slice (held-out templates)\n")
    print(acc.round(3).to_markdown())
    print("\n### The base's teacher-forced error rate per token role (which skill fails)\n")
    print(skills.rename_axis("op").round(3).to_markdown())
    print("\n### Teacher-forced exact match per slice\n")
    print(em.round(3).to_markdown())
    for obj, lg in logs.items():
        print(
            f"\n{obj}: {lg['steps']} steps on {args.n} op-{args.ops} examples in {lg['seconds']:.1f} s, "
            f"{lg['tokens_per_s']:.0f} tokens/s ({lg['response_tokens_per_s']:.0f} response tokens/s)"
        )
    test = [p for op in range(1, 11) for p in slices[op]]
    bound, tv = BoundConfig(loss="token_error"), TVConfig(permutations=500, max_per_side=None)
    tg, doc = certify(args.base, str(out / "adapter_sft"), train, test, bound=bound, tv=tv)
    (out / "certificate.json").write_text(json.dumps(doc, indent=2))
    print("\n### Certificate of the SFT adapter (pacbayes-sft certify)\n")
    print(
        f"- n = {doc['n']}, loss = {doc['loss']}; point train risk {doc['empirical_risk']['point']:.4f}, "
        f"MC mean {doc['empirical_risk']['mc_mean']:.4f}, MC upper (certified; {doc['empirical_risk']['mc_losses']} independent losses, "
        f"{doc['empirical_risk']['mc_scheme']}) {doc['empirical_risk']['mc_upper']:.4f}"
    )
    print(
        f"- KL = {doc['kl']['value_nats']:.4g} nats ({doc['kl']['space']} space), sigma = {doc['sigma']['value']:g} ({doc['sigma']['rule']})"
    )
    print(f"- G_gen: Seeger {doc['g_gen']['seeger']:.4f}, Maurer {doc['g_gen']['maurer']:.4f} (certified)")
    print(
        f"- TV proxy {doc['tv']['estimate']:.4f} (lower bound {doc['tv']['lower']:.4f}, p = {doc['tv']['p_value']:.3g}) -> G_ext {doc['g_ext']:.4f} (estimate)"
    )
    print(
        f"- total {doc['total']:.4f} (estimate, NOT certified); delta split: "
        + ", ".join(f"{e['term']} {e['delta']:.3g}" for e in doc["delta"]["ledger"]["entries"])
    )
    test_risk = df[(df.model == "sft") & (df.metric == "token_error")]["value"].mean()
    print(f"- measured test token error of the SFT adapter (mean over op 1-10 slices): {test_risk:.4f}")
