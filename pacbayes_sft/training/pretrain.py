"""Pretrain a small causal LM from scratch on the synthetic task (a nanoGPT-style loop).

The base model is a Llama built from config: rotary position embeddings encode relative
positions, so problems longer than those seen in pretraining do not land on untrained absolute
position rows (a learned position table cannot be repaired by LoRA on attention). Loss is on the
response tokens only. The result is saved with ``save_pretrained`` (safetensors) beside its
tokenizer and ``pretrain.json`` (config, seed, steps, wall time, library versions), so the rest
of the toolkit loads it like any Hugging Face checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import option
from ..data.igsm import IGSMConfig, iter_problems, recall_drill
from ..data.tokenizer import igsm_tokenizer
from ..lm.encoding import collate, encode
from ..versions import library_versions
from .models import load_causal_lm, tiny_config

ARCHS = ("llama", "gpt2")


@dataclass
class PretrainConfig:
    """Everything that determines a pretraining run."""

    arch: str = option(
        "llama",
        "'llama' (rotary positions) or 'gpt2' (a learned position table, trained at random offsets).",
        choices=ARCHS,
    )
    ops: tuple[int, ...] = option(
        (1, 2, 3, 4), "Operation counts seen in pretraining (the base model's capability range)."
    )
    modulus: int = option(7, "Arithmetic modulus of the task.")
    hidden: int = option(128, "Model width.")
    layers: int = option(4, "Transformer blocks.")
    heads: int = option(4, "Attention heads.")
    intermediate: int = option(512, "MLP width.")
    batch_size: int = option(32, "Problems per step.")
    lr: float = option(2e-3, "Peak learning rate (AdamW), linear warm-up then cosine decay to 10%.")
    warmup: int = option(200, "Warm-up steps.")
    steps: int = option(20_000, "Maximum optimizer steps.")
    max_minutes: float = option(60.0, "Wall-clock budget; the cosine schedule is laid out over min(steps, what fits).")
    weight_decay: float = option(0.1, "AdamW weight decay.")
    seed: int = option(0, "Seed of the model initialisation and the problem stream.")
    threads: int = option(0, "torch threads (0 = torch's default).")
    checkpoint_minutes: float = option(10.0, "Save a checkpoint this often so an interrupted run loses little.")
    recall_fraction: float = option(
        0.0, "Fraction of problems replaced by retrieval drills (:func:`~pacbayes_sft.data.igsm.recall_drill`)."
    )
    recall_max: int = option(5, "Most names asked for in one drill (at least 2; capped by the problem's statements).")
    prompt_loss: float = option(
        0.0, "Weight of the next-token loss on prompt tokens relative to response tokens (0 = response only)."
    )
    position_offset: int = option(
        256,
        "gpt2 only: each sequence starts at a random position in [0, position_offset], so that rows of the position table beyond the pretraining lengths are trained too (LoRA cannot repair them).",
    )
    init_from: str = option(
        "", "Continue from the weights of a saved checkpoint (fresh optimizer and schedule); '' = from scratch."
    )
    extra: dict = option(help="Free-form notes recorded with the run.", factory=dict)


def base_config(cfg: PretrainConfig, vocab_size: int, pad: int, bos: int, eos: int):
    """The base's transformers config: full key/value heads, no dropout, 2048 positions."""

    return tiny_config(
        cfg.arch,
        vocab_size,
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        kv_heads=cfg.heads,
        intermediate=cfg.intermediate,
        max_positions=2048,
        special_ids=(pad, bos, eos),
        dropout=0.0,
    )


def _save(model, tok, out: Path, meta: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "pretrain.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)


def _check_pretrain_config(cfg: PretrainConfig) -> None:
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")
    if not 0.0 <= cfg.recall_fraction < 1.0:
        raise ValueError(f"recall_fraction must lie in [0, 1), got {cfg.recall_fraction!r}")
    if cfg.recall_max < 2:
        raise ValueError(f"recall_max must be >= 2, got {cfg.recall_max!r}")
    if cfg.prompt_loss < 0:
        raise ValueError(f"prompt_loss must be >= 0, got {cfg.prompt_loss!r}")
    if cfg.position_offset < 0:
        raise ValueError(f"position_offset must be >= 0, got {cfg.position_offset!r}")


def _initial_model(cfg: PretrainConfig, tok):
    """From ``init_from`` (weights only) or from config under the current torch seed."""
    from transformers import AutoModelForCausalLM

    if not cfg.init_from:
        return AutoModelForCausalLM.from_config(
            base_config(cfg, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
        )

    model = load_causal_lm(cfg.init_from)
    if model.config.vocab_size != len(tok):
        raise ValueError(
            f"init_from {cfg.init_from!r} has vocabulary {model.config.vocab_size}, the task needs {len(tok)}"
        )
    return model


def learning_rate(cfg: PretrainConfig, step: int, horizon: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to 10% of it at ``horizon``."""
    if step <= cfg.warmup:
        return cfg.lr * step / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, horizon - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _next_pairs(cfg: PretrainConfig, stream, mix: random.Random) -> list[tuple[str, str]]:
    """One batch of (prompt, response) pairs; a ``recall_fraction`` of them retrieval drills."""
    pairs = []
    for _ in range(cfg.batch_size):
        prob = next(stream)
        drill = cfg.recall_fraction and mix.random() < cfg.recall_fraction
        pairs.append(recall_drill(prob, prob.seed, k=(2, cfg.recall_max)) if drill else (prob.prompt, prob.response))
    return pairs


def pretrain(cfg: PretrainConfig, out_dir: str | Path, *, log=print) -> dict:
    """Run pretraining and save the model to ``out_dir``; returns the metadata written."""

    _check_pretrain_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    torch.manual_seed(cfg.seed)
    tok = igsm_tokenizer(cfg.modulus)
    # On a GPU when there is one (the run is deterministic per device for a fixed step count).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _initial_model(cfg, tok).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    stream = iter_problems(list(cfg.ops), split="train", seed=cfg.seed, config=IGSMConfig(modulus=cfg.modulus))
    gen = torch.Generator().manual_seed(cfg.seed)
    mix = random.Random(f"recall-mix:{cfg.seed}")
    t0 = time.perf_counter()
    last_ckpt = t0
    horizon = cfg.steps
    tokens = resp_tokens = 0
    losses: list[float] = []
    history = []
    step = 0
    meta: dict = {}
    for step in range(1, cfg.steps + 1):
        elapsed = time.perf_counter() - t0
        if elapsed > cfg.max_minutes * 60:
            break
        if step == 50:  # lay the schedule over the steps that fit in the budget
            per_step = elapsed / 49
            horizon = min(cfg.steps, int(cfg.max_minutes * 60 / per_step))
        lr = learning_rate(cfg, step, horizon)
        for g in opt.param_groups:
            g["lr"] = lr
        pairs = _next_pairs(cfg, stream, mix)
        batch = collate(encode(tok, [p for p, _ in pairs], [r for _, r in pairs]), tok.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = _loss(model, batch, cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        resp_tokens += int(batch["response_mask"].sum())
        if step % 100 == 0:
            el = time.perf_counter() - t0
            rec = {
                "step": step,
                "loss": sum(losses[-100:]) / 100,
                "lr": lr,
                "minutes": el / 60,
                "tokens_per_s": tokens / el,
            }
            history.append(rec)
            log(f"step {step} loss {rec['loss']:.4f} lr {lr:.2e} {rec['tokens_per_s']:.0f} tok/s {el / 60:.1f} min")
        if time.perf_counter() - last_ckpt > cfg.checkpoint_minutes * 60:
            meta = _meta(cfg, step, t0, tokens, resp_tokens, n_params, history, partial=True)
            _save(model, tok, out, meta)
            last_ckpt = time.perf_counter()
    meta = _meta(cfg, step, t0, tokens, resp_tokens, n_params, history, partial=False)
    model.eval()
    _save(model.cpu(), tok, out, meta)
    return meta


def _loss(model, batch: dict, cfg: PretrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens, plus ``prompt_loss`` × the prompt
    tokens' cross-entropy (normalised by the response-token count, in nats)."""
    ids, att, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    kwargs = {}
    if model.config.model_type == "gpt2":
        start = torch.randint(0, cfg.position_offset + 1, (ids.shape[0], 1), generator=gen)
        kwargs["position_ids"] = (start + torch.arange(ids.shape[1]).unsqueeze(0)).to(ids.device)
    logits = model(input_ids=ids, attention_mask=att, **kwargs).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    w = resp[:, 1:].float()
    if cfg.prompt_loss:
        w = w + cfg.prompt_loss * ((att[:, 1:] == 1) & (resp[:, 1:] == 0)).float()
    return (ce * w).sum() / resp[:, 1:].sum()


def _meta(cfg, step, t0, tokens, resp_tokens, n_params, history, *, partial: bool) -> dict:
    el = time.perf_counter() - t0
    return {
        "config": asdict(cfg),
        "steps": step,
        "minutes": el / 60,
        "tokens": tokens,
        "response_tokens": resp_tokens,
        "tokens_per_s": tokens / max(el, 1e-9),
        "parameters": n_params,
        "history": history,
        "partial": partial,
        "versions": library_versions(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "command": pretrain_command(cfg),
    }


def pretrain_command(cfg: PretrainConfig, out: str = "DIR") -> str:
    """The ``pacbayes-sft pretrain`` command line that reproduces ``cfg`` (every field but ``extra``)."""
    parts = ["pacbayes-sft", "pretrain", "--out", out, "--ops", ",".join(map(str, cfg.ops))]
    for k, v in asdict(cfg).items():
        if k in ("extra", "ops") or v == "":
            continue
        parts += [f"--{k.replace('_', '-')}", str(v)]
    return " ".join(parts)
