"""LoRA supervised fine-tuning with transformers' Trainer: the standard loss and DFT.

Objectives, over the response tokens y_t of a batch (N = number of response tokens):

- ``sft``: L = (1/N) Σ_t −ln p(y_t | y_<t, x)                       (cross-entropy)
- ``dft``: L = (1/N) Σ_t sg(p(y_t | y_<t, x)) · (−ln p(y_t | y_<t, x))  (Dynamic Fine-Tuning,
  arXiv 2508.05629; sg = stop-gradient). Its gradient is the SFT gradient with each token
  reweighted by its own probability: an implicit shift toward tokens the model already finds
  easy. The plain cross-entropy is logged beside it (``ce``).

Training goes through ``transformers.Trainer`` so the same code runs on CPU, on one GPU, and
under ``accelerate launch`` / ``torchrun`` on several. Batches are grouped by length. The adapter
is saved in peft's format together with ``lora_init.safetensors`` (the initial factors, which the
"lora" prior needs) and ``training.json`` (config, loss curve, throughput, versions).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import console
from ..adapters import init_state_from_factors, lora_factors, save_init_state
from ..lm.encoding import Encoded, collate, encode
from ..lm.teacher_forcing import token_logprobs
from ..versions import library_versions
from .config import OBJECTIVES, SFTConfig
from .models import attach_lora, load_causal_lm


def response_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token CE −ln p(y_t | y_<t, x) (nats) and the mask of response tokens.

    Returns (ce, mask), both (batch, T − 1) over the shifted positions; labels = −100 off the response.
    """
    return -token_logprobs(logits, labels), labels[:, 1:] != -100


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, objective: str = "sft") -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss, plain CE) averaged over the response tokens of the batch."""
    ce, mask = response_token_losses(logits, labels)
    n = mask.sum()
    if n == 0:
        raise ValueError("the batch has no response tokens (labels are all -100)")
    maskf = mask.to(ce.dtype)
    plain = (ce * maskf).sum() / n
    if objective == "sft":
        return plain, plain.detach()
    if objective == "dft":
        weight = torch.exp(-ce).detach()  # sg(p(y_t | y_<t, x))
        return (weight * ce * maskf).sum() / n, plain.detach()
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, enc: list[Encoded]):
        self.enc = enc

    def __len__(self) -> int:
        return len(self.enc)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.enc[i].ids, "prompt_len": self.enc[i].prompt_len}


def _make_trainer_class():
    from transformers import Trainer

    class LoRASFTTrainer(Trainer):
        """Trainer whose loss is SFT or DFT on response tokens, logging plain CE and throughput."""

        def __init__(self, *args, objective: str = "sft", **kwargs):
            super().__init__(*args, **kwargs)
            self.objective = objective
            self._ce_sum = 0.0
            self._ce_n = 0
            self.tokens_seen = 0
            self.response_tokens_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss, plain = sft_loss(outputs.logits, labels, self.objective)
            if model.training:
                self._ce_sum += float(plain)
                self._ce_n += 1
                self.tokens_seen += int(inputs["attention_mask"].sum())
                self.response_tokens_seen += int((labels != -100).sum())
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict, *args, **kwargs) -> None:
            if self._ce_n and "loss" in logs:
                logs["ce"] = self._ce_sum / self._ce_n
                self._ce_sum, self._ce_n = 0.0, 0
            super().log(logs, *args, **kwargs)

    return LoRASFTTrainer


def _training_arguments(cfg: SFTConfig, output_dir: Path):
    """transformers TrainingArguments for ``cfg`` (no checkpoints, no reporting, CPU when no GPU)."""
    import dataclasses

    from transformers import TrainingArguments

    # transformers >= 5 spells length grouping as a sampling strategy; older versions as a flag.
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        grouping = {"train_sampling_strategy": "group_by_length" if cfg.group_by_length else "random"}
    else:
        grouping = {"group_by_length": cfg.group_by_length}
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        weight_decay=cfg.weight_decay,
        warmup_steps=0,
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        **grouping,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,  # the toolkit draws its own nested bar (_StepBar), which clears itself
        use_cpu=not torch.cuda.is_available(),
        **_precision(cfg.precision),
    )


def _precision(precision: str) -> dict:
    """TrainingArguments flags for the configured precision; mixed precision needs a GPU."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision != "fp32" and not torch.cuda.is_available():
        raise ValueError(f"precision {precision!r} needs a GPU; use fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def _set_console_callbacks(trainer, progress: bool) -> None:
    """The Trainer's per-log dictionaries only with verbose output (the curve is kept in
    training.json); a nested step bar that clears itself when ``progress``."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    if not console.verbose():
        trainer.remove_callback(PrinterCallback)
    if not (progress and console.show_progress()):
        return

    class _StepBar(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="training steps", leave=False, dynamic_ncols=True, disable=None)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(1)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    trainer.add_callback(_StepBar())


@dataclass
class FinetuneResult:
    adapter_dir: Path
    log: dict = field(default_factory=dict)
    model: Any = None


def finetune(
    base: Any, tokenizer, prompts: list[str], responses: list[str], cfg: SFTConfig, out_dir: str | Path
) -> FinetuneResult:
    """LoRA-fine-tune ``base`` (a model or a local checkpoint path) and save the adapter.

    Writes ``out_dir/adapter_model.safetensors`` + ``adapter_config.json`` (peft format),
    ``lora_init.safetensors`` and ``training.json``. Returns the trained peft model too.
    """
    from transformers import set_seed

    out = Path(out_dir)
    model = load_causal_lm(base) if isinstance(base, (str, Path)) else base
    set_seed(cfg.seed)
    peft_model = attach_lora(
        model,
        r=cfg.r,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        use_rslora=cfg.use_rslora,
        seed=cfg.seed,
    )
    init_state = init_state_from_factors(lora_factors(peft_model))  # a copy, before training moves them
    enc = encode(tokenizer, prompts, responses)
    pad = tokenizer.pad_token_id

    def data_collator(features: list[dict]) -> dict:
        b = collate([Encoded(f["input_ids"], f["prompt_len"]) for f in features], pad)
        return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "labels": b["labels"]}

    args = _training_arguments(cfg, out / "_trainer")
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(
        model=peft_model, args=args, train_dataset=_Dataset(enc), data_collator=data_collator, objective=cfg.objective
    )
    _set_console_callbacks(trainer, cfg.progress)
    per_step = cfg.batch_size * args.world_size  # data-parallel under torchrun / accelerate launch
    steps_total = args.max_steps if args.max_steps > 0 else math.ceil(len(enc) / per_step) * math.ceil(cfg.epochs)
    trainer.args.warmup_steps = int(cfg.warmup_ratio * steps_total)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    peft_model.eval()
    log = _training_log(cfg, trainer, len(enc), seconds)
    if trainer.is_world_process_zero():  # one writer when several processes train one model
        import shutil

        out.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(out)
        save_init_state(init_state, out)
        shutil.rmtree(out / "_trainer", ignore_errors=True)
        (out / "training.json").write_text(json.dumps(log, indent=2))
    trainer.accelerator.wait_for_everyone()  # every rank returns once the adapter is on disk
    return FinetuneResult(adapter_dir=out, log=log, model=peft_model)


def _training_log(cfg: SFTConfig, trainer, n_examples: int, seconds: float) -> dict:
    return {
        "config": asdict(cfg),
        "n_examples": n_examples,
        "world_size": trainer.args.world_size,
        "seconds": seconds,
        "tokens_per_s": trainer.tokens_seen / max(seconds, 1e-9),
        "response_tokens_per_s": trainer.response_tokens_seen / max(seconds, 1e-9),
        "steps": trainer.state.global_step,
        "history": [h for h in trainer.state.log_history if "loss" in h or "ce" in h],
        "versions": library_versions(),
    }
