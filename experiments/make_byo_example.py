"""Write the shipped bring-your-own example: a small math SFT dataset in the ordinary public
format (prompt, step-by-step response, final answer), a byte-level BPE tokenizer trained on it
by `tokenizers`, and a Hugging Face Llama saved from config beside it.

    python experiments/make_byo_example.py [--out experiments/byo_example] [--train-per-op 60]

Everything is deterministic (seeded), so the committed files can be regenerated exactly. The
records are natural-language renderings of iGSM problems (op 1-6); `experiments/configs/
byo_example.yaml` then runs sweep -> report -> forecast -> certify on them as on any user's data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pacbayes_sft.data.nl_igsm import records
from pacbayes_sft.data.tokenizer import train_bpe_tokenizer
from pacbayes_sft.training.models import build_model, tiny_config

CHAT = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"


def write(out: Path, train_per_op: int, test_per_op: int, vocab: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ops = [1, 2, 3, 4, 5, 6]
    train = records(train_per_op, ops, "train", seed=100)
    test = records(test_per_op, ops, "test", seed=200)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_bpe_tokenizer([r["prompt"] + " " + r["response"] for r in train], vocab, chat_template=CHAT)
    cfg = tiny_config("llama", len(tok), hidden=48, layers=2, heads=4, max_positions=512)
    model_dir = out / "model"
    build_model(cfg, seed=0).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    print(f"wrote {len(train)} train and {len(test)} test records, tokenizer ({len(tok)} tokens) and model to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "byo_example"))
    ap.add_argument("--train-per-op", type=int, default=60)
    ap.add_argument("--test-per-op", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=400)
    args = ap.parse_args()
    write(Path(args.out), args.train_per_op, args.test_per_op, args.vocab)


if __name__ == "__main__":
    main()
