"""The fine-tuning hyperparameters, as a config: no torch, so the sweep's config layer can read
them without loading the training code."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option

OBJECTIVES = ("sft", "dft")


@dataclass
class SFTConfig:
    """Hyperparameters of one LoRA fine-tuning run."""

    objective: str = option(
        "sft", "'sft' (cross-entropy) or 'dft' (probability-weighted cross-entropy).", choices=OBJECTIVES
    )
    r: int = option(8, "LoRA rank.")
    alpha: float = option(16.0, "LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).")
    dropout: float = option(0.0, "LoRA dropout.")
    target_modules: list[str] | None = option(
        None, "Modules to adapt (default: attention and MLP projections for the architecture)."
    )
    use_rslora: bool = option(False, "Rank-stabilised scaling alpha / sqrt(r).")
    lr: float = option(2e-3, "Peak learning rate.")
    epochs: float = option(3.0, "Passes over the training set (ignored when max_steps > 0).")
    max_steps: int = option(-1, "Optimizer steps (overrides epochs when > 0).")
    batch_size: int = option(16, "Examples per device and step.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    warmup_ratio: float = option(0.05, "Fraction of steps of linear warm-up.")
    scheduler: str = option("cosine", "Learning-rate schedule (any transformers scheduler name).")
    max_grad_norm: float = option(1.0, "Gradient clipping.")
    group_by_length: bool = option(True, "Batch examples of similar length together (less padding).")
    seed: int = option(0, "Seed of the LoRA initialisation, data order and dropout.")
    logging_steps: int = option(10, "Log the loss every this many steps.")
    precision: str = option(
        "fp32",
        "Training precision: fp32, or bf16 / fp16 mixed precision (GPU only; bf16 for Qwen-class models).",
        choices=("fp32", "bf16", "fp16"),
    )
    progress: bool = option(True, "Show a progress bar for the training steps.")

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be an integer >= 1, got {self.r!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0 when max_steps <= 0, got {self.epochs!r}")
