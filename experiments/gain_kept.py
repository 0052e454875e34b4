"""The share of SFT's op 5–6 gain that the certified model of the answer-error target keeps, with
a paired bootstrap over the test items (issue 24, item 5b).

    python experiments/gain_kept.py --out runs/answer_certificate

The recipe of ``answer_certificate.py`` at n = 4096, op 5–6 (adapters reused from ``--out`` when
there): SFT on all of S, the prior adapter on its first half, σ_p chosen on that half. On the 200
op 5–6 problems of the study's test set it scores, item by item, the base (point), SFT (point)
and the posterior equal to the prior at σ_p (one own draw per item; the learned posterior stayed
within 1.6 nats of it), and bootstraps (e_base − e_model)/(e_base − e_SFT) with the items
resampled jointly. Writes ``gain_kept.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from answer_certificate import _losses, _peft, choose_prior_sigma

from pacbayes_sft.data import generate, test_set
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.report.uncertainty import gain_kept
from pacbayes_sft.sweep.config import SHIPPED_BASE
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import SFTConfig, finetune


def _item_errors(losses, model, sigma=None) -> list[float]:
    """Per-item answer error of the point model, or under one own posterior draw per item."""
    idx = list(range(losses.n))
    if sigma is None:
        return [float(v) for v in losses.batch(model, idx)]
    from pacbayes_sft.posteriors import GaussianPosterior

    post = GaussianPosterior(model, sigma, "lora", seed=99)
    out = []
    for s in range(0, losses.n, losses.batch_size):
        rows = idx[s : s + losses.batch_size]
        with post.sample_rows(rows) as mdl:
            out += [float(v) for v in losses.batch(mdl, rows)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/answer_certificate")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--multiples", default="0.02,0.05,0.1,0.2,0.5,1")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--select", type=int, default=256)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(SHIPPED_BASE)
    train = generate(args.n, [5, 6], split="train", seed=7)
    half = args.n // 2
    for name, data in (("sft", train), ("prior", train[:half])):
        if not (out / name / "adapter_config.json").is_file():
            print(f"SFT {name}: {len(data)} examples", flush=True)
            finetune(str(SHIPPED_BASE), tok, [p.prompt for p in data], [p.response for p in data],
                     SFTConfig(progress=False), out / name)  # fmt: skip
    sigma_p, _ = choose_prior_sigma(out / "prior", tok, train[:half], args)
    hard = [p for p in test_set(range(1, 9), 100, seed=12345) if p.op in (5, 6)]
    losses = _losses(tok, hard)
    errors = {
        "base": _item_errors(losses, load_causal_lm(SHIPPED_BASE).eval()),
        "sft": _item_errors(losses, _peft(out / "sft")),
        "posterior = prior": _item_errors(losses, _peft(out / "prior"), sigma_p),
    }
    g = gain_kept(errors["base"], errors["sft"], errors["posterior = prior"], n_boot=10_000)
    mean = {k: sum(v) / len(v) for k, v in errors.items()}
    doc = {"sigma_p": sigma_p, "answer_error": mean, "gain_kept": g.__dict__, "n_items": len(hard)}
    (out / "gain_kept.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
