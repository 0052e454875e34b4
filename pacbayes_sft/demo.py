"""``pacbayes-sft adapter-demo``: one LoRA adapter on a tiny from-config model, and its certificate.

A tiny Llama is built from config (nothing downloaded), LoRA-fine-tuned with the toolkit's own
SFT code on n iGSM-style problems with 1–2 operations, and certified by the same engine as
``certify`` and the sweep (:func:`~pacbayes_sft.certify.certificate_core`). The TV term here is
the histogram TV of the op count between the training sample and a test set of 1–4-operation
problems: a plug-in proxy on one feature, so the total is an estimate. The sweep
(``pacbayes-sft demo``) is the main job; this is the one-adapter view of the bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import defaults
from .certify.certificate import TVTerm
from .certify.config import BoundConfig
from .certify.engine import certificate_core, plan_delta
from .certify.losses import teacher_forced_losses
from .data.igsm import generate
from .data.tokenizer import igsm_tokenizer
from .estimators.histogram_tv import histogram_tv
from .lm.scoring import teacher_forced_metrics
from .training.models import build_model, tiny_config
from .training.sft import SFTConfig, finetune

DEMO_SIGMAS = (3e-3, 1e-2, 3e-2, 1e-1)


def run_demo(
    out_dir: str | Path,
    *,
    n: int = 256,
    steps: int = 60,
    seed: int = 0,
    m: int = 1,
    sigmas: tuple[float, ...] = DEMO_SIGMAS,
    delta: float = defaults.DELTA,
) -> dict:
    """Train the demo adapter, certify it, write ``report.json`` (the certificate plus the measured
    test risk); return that document."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=64, layers=2, heads=4, max_positions=512), seed=seed)
    train = generate(n, [1, 2], split="train", seed=seed)
    test = generate(128, [1, 2, 3, 4], split="test", seed=seed + 1)
    sft = SFTConfig(r=8, alpha=16.0, lr=3e-3, max_steps=steps, batch_size=32, seed=seed, progress=False)
    res = finetune(base, tok, [p.prompt for p in train], [p.response for p in train], sft, out / "adapter")

    cfg = BoundConfig(sigmas=list(sigmas), delta=delta, m=m, loss="token_error")  # teacher forcing: no generation
    losses = teacher_forced_losses(tok, [p.prompt for p in train], [p.response for p in train], cfg.loss)
    tv = TVTerm.plain(
        histogram_tv([p.op for p in train], [p.op for p in test]),
        n_p=n,
        n_q=len(test),
        kind="histogram TV of the op count (a plug-in proxy on one feature; not certified)",
    )
    cert = certificate_core(res.model, losses, tv, cfg, plan_delta(cfg, n, tv_interval=False), seed=seed)
    test_err = teacher_forced_metrics(res.model, tok, [p.prompt for p in test], [p.response for p in test])
    doc = cert.to_dict() | {
        "task": "iGSM-style problems; train on op 1-2, test on op 1-4",
        "model": "tiny Llama from config (hidden 64, 2 layers), LoRA r=8 alpha=16 on attention+MLP",
        "measured_test_risk": sum(test_err["token_error"]) / len(test),
        "seconds": time.perf_counter() - t0,
    }
    (out / "report.json").write_text(json.dumps(doc, indent=2))
    return doc
