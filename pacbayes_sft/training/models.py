"""Causal LMs built from config (no hub downloads) and LoRA set-up per architecture.

Tiny GPT-2, Llama and Qwen2 models are built here for tests and demos; real checkpoints load
from a local directory with :func:`load_causal_lm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedModel, Qwen2Config

ARCHITECTURES = ("gpt2", "llama", "qwen2")

# LoRA targets per model_type: attention and MLP projections. GPT-2 uses Conv1D layers, which
# store weights transposed, so peft needs fan_in_fan_out=True there.
TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
FAN_IN_FAN_OUT = {"gpt2"}


def tiny_config(
    arch: str,
    vocab_size: int = 64,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 256,
    intermediate: int | None = None,
    kv_heads: int | None = None,
    special_ids: tuple[int, int, int] = (0, 1, 2),
    dropout: float | None = None,
) -> Any:
    """A small transformers config of the given architecture ("gpt2", "llama" or "qwen2").

    Llama/Qwen2 use grouped-query attention with ``kv_heads`` key/value heads (default: half the
    heads) and tied embeddings. ``special_ids`` are the (pad, bos, eos) token ids. ``dropout=None``
    keeps the architecture's default dropout.
    """
    pad_id, bos_id, eos_id = special_ids
    inter = intermediate or 4 * hidden
    if arch == "gpt2":
        drop = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_positions,
            n_inner=inter,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            **drop,
        )
    if arch in ("llama", "qwen2"):  # the same decoder fields
        config_cls = LlamaConfig if arch == "llama" else Qwen2Config
        drop = {} if dropout is None else {"attention_dropout": dropout}
        return config_cls(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads or max(1, heads // 2),
            intermediate_size=inter,
            max_position_embeddings=max_positions,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            tie_word_embeddings=True,
            **drop,
        )
    raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")


def build_model(config: Any, seed: int = 0) -> PreTrainedModel:
    """Instantiate a causal LM from a config with a fixed seed (float32, eval mode)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model.eval()


def tiny_causal_lm(arch: str, vocab_size: int = 64, seed: int = 0, **kwargs: Any) -> PreTrainedModel:
    """A tiny randomly initialised causal LM of the given architecture, built from config."""
    return build_model(tiny_config(arch, vocab_size, **kwargs), seed=seed)


def load_causal_lm(path: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None) -> PreTrainedModel:
    """Load a causal LM from a local directory (safetensors weights; nothing is downloaded)."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise ValueError(f"base model directory {str(p)!r} must exist and contain config.json")
    if not any(p.glob("*.safetensors")):
        raise ValueError(
            f"base model directory {str(p)!r} has no .safetensors weights (pickle-based weights are not loaded)"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, use_safetensors=True, dtype=dtype)
    except OSError as exc:
        raise ValueError(f"base model directory {str(p)!r} could not be loaded: {str(exc).splitlines()[0]}") from None
    if device is not None:
        model = model.to(device)
    return model.eval()


def lora_targets(model: PreTrainedModel) -> tuple[list[str], bool]:
    """Default LoRA target modules for a model and whether it needs fan_in_fan_out."""
    mtype = getattr(model.config, "model_type", None)
    if mtype in TARGET_MODULES:
        return list(TARGET_MODULES[mtype]), mtype in FAN_IN_FAN_OUT
    # Fallback: every Linear inside the transformer blocks except the output head.
    names = sorted(
        {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    )
    if not names:
        raise ValueError(f"cannot choose LoRA target modules for model_type {mtype!r}; pass target_modules")
    return names, False


def attach_lora(
    model: PreTrainedModel,
    *,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    use_rslora: bool = False,
    rank_pattern: dict | None = None,
    alpha_pattern: dict | None = None,
    seed: int = 0,
) -> Any:
    """Wrap ``model`` in a peft LoRA model with architecture-aware defaults.

    The initial A factors are drawn under ``seed`` so that the "lora" prior is reproducible.
    """
    from peft import LoraConfig, get_peft_model

    if not isinstance(r, int) or r < 1:
        raise ValueError(f"r must be an integer >= 1, got {r!r}")
    targets, fifo = lora_targets(model)
    if target_modules is not None:
        targets = list(target_modules)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=fifo,
        use_rslora=use_rslora,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    return get_peft_model(model, config)
