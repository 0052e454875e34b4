"""Squared norms and Gaussian KLs of LoRA adapters.

A LoRA module adds ΔW = s·B A to a frozen weight W_pre (B ∈ R^{m×r}, A ∈ R^{r×k},
s = lora_alpha/r, or lora_alpha/√r with rsLoRA; peft's rank_pattern/alpha_pattern set r and
alpha per module). Its squared Frobenius norm is computed from r×r Gram matrices,

    ‖s·B A‖_F² = s² ⟨BᵀB, A Aᵀ⟩_F,

in O((m + k) r²) float64 work, never forming the m×k product.

Two parameter spaces for a Gaussian posterior/prior pair with a shared isotropic scale σ:

- ``"delta"``: over the adapted weight matrices. Posterior N(W_pre + ΔW, σ²I), prior
  N(W_pre, σ²I) — the prior sits exactly at the pretrained weights:
  KL = Σ_modules ‖ΔW‖_F² / (2σ²)  (+ s²‖b‖² for a LoRA bias).
- ``"lora"``: over the adapter factors themselves, prior centred at their initialisation
  (B₀ = 0, A₀ = A_init, which computes the pretrained function):
  KL = Σ_modules (‖A − A₀‖² + ‖B − B₀‖²) / (2σ²). Needs the initial factors, which
  :mod:`pacbayes_sft.training` saves as ``lora_init.safetensors`` beside the adapter.

σ may be one float or a mapping from module name (as in :func:`lora_factors`) to a float.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .gaussian_kl import sum_sq_diff

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
INIT_FILE = "lora_init.safetensors"
_PREFIX = "base_model.model."


@dataclass
class LoraFactor:
    """One LoRA module: ΔW = scaling · B @ A (A: r×k, B: m×r), plus an optional bias on B."""

    name: str
    A: torch.Tensor
    B: torch.Tensor
    scaling: float
    bias: torch.Tensor | None = None


def _to_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
    else:
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    return t


def _as_matrix(t: torch.Tensor, name: str, rank_dim: int) -> torch.Tensor:
    """Flatten a conv-shaped LoRA factor to a matrix with the rank on ``rank_dim``."""
    if t.ndim == 2:
        return t
    if t.ndim > 2:
        return t.reshape(t.shape[0], -1) if rank_dim == 0 else t.reshape(t.shape[0], t.shape[1])
    raise ValueError(f"{name} must be a 2-D matrix (or a conv kernel), got shape {tuple(t.shape)}")


def lora_delta_sq_norm(A: Any, B: Any, scaling: float = 1.0) -> float:
    """‖scaling · B @ A‖_F² = scaling² ⟨BᵀB, A Aᵀ⟩_F in float64, without forming B @ A.

    Args:
        A: r×k down-projection (tensor or array); conv kernels (r, k, ...) are flattened.
        B: m×r up-projection; conv kernels (m, r, 1, ...) are flattened.
        scaling: the LoRA scale s (lora_alpha/r or lora_alpha/√r), finite.
    """
    a = _as_matrix(_to_tensor(A, "A"), "A", 0)
    b = _as_matrix(_to_tensor(B, "B"), "B", 1)
    if a.shape[0] != b.shape[1]:
        raise ValueError(f"rank mismatch: A has {a.shape[0]} rows but B has {b.shape[1]} columns")
    try:
        s = float(scaling)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scaling must be a finite number, got {scaling!r}") from exc
    if not math.isfinite(s):
        raise ValueError(f"scaling must be a finite number, got {scaling!r}")
    a64 = a.to(torch.float64)
    b64 = b.to(torch.float64)
    value = s * s * float((a64 @ a64.T).mul_(b64.T @ b64).sum())
    if not math.isfinite(value):
        raise ValueError("A and B must be finite (no NaN or inf)")
    return max(value, 0.0)


# ---------------------------------------------------------------------------------------------
# Reading factors from a PeftModel or an adapter directory


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rule: a pattern key k matches module name m if m matches ``(.*\\.)?(k)$``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _strip(name: str) -> str:
    return name[len(_PREFIX) :] if name.startswith(_PREFIX) else name


def _factors_from_peft_model(model: torch.nn.Module, adapter_name: str | None) -> Iterator[LoraFactor]:
    from peft.tuners.lora import LoraLayer

    found = False
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        adapters = [adapter_name] if adapter_name is not None else list(module.active_adapters)
        for ad in adapters:
            if ad in getattr(module, "lora_magnitude_vector", {}):
                raise ValueError(f"model: DoRA adapter on {name!r} is not supported (its update is not s·BA)")
            if ad in module.lora_A:
                found = True
                bias = module.lora_B[ad].bias if getattr(module.lora_B[ad], "bias", None) is not None else None
                yield LoraFactor(
                    _strip(name),
                    module.lora_A[ad].weight.detach(),
                    module.lora_B[ad].weight.detach(),
                    float(module.scaling[ad]),
                    None if bias is None else bias.detach(),
                )
            elif ad in module.lora_embedding_A:
                found = True
                yield LoraFactor(
                    _strip(name),
                    module.lora_embedding_A[ad].detach(),
                    module.lora_embedding_B[ad].detach(),
                    float(module.scaling[ad]),
                )
    if not found:
        raise ValueError(f"model has no LoRA weights for adapter {adapter_name or 'active'!r}")


def load_adapter_state(adapter_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``adapter_config.json`` and the adapter weights (safetensors, or a weights-only .bin)."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise ValueError(f"adapter directory {str(path)!r} does not exist or is not a directory")
    cfg_path = path / "adapter_config.json"
    if not cfg_path.is_file():
        raise ValueError(f"adapter directory {str(path)!r} has no adapter_config.json")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"adapter_config.json in {str(path)!r} is not valid JSON: {exc}") from exc
    weights = next((path / f for f in ADAPTER_WEIGHTS if (path / f).is_file()), None)
    if weights is None:
        raise ValueError(f"adapter directory {str(path)!r} has no {' or '.join(ADAPTER_WEIGHTS)}")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle payloads are refused by weights_only
            raise ValueError(f"adapter weights {str(weights)!r} could not be loaded safely: {exc}") from exc
    return config, state


def _factors_from_state(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
) -> Iterator[LoraFactor]:
    if config.get("peft_type", "LORA") not in ("LORA", None):
        raise ValueError(f"{where}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise ValueError(f"{where}: DoRA adapters (use_dora=true) are not supported (the update is not s·BA)")
    r_default = config.get("r", 8)
    alpha_default = config.get("lora_alpha", 8)
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora", False))

    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for tag, field in (
            (".lora_A.weight", "A"),
            (".lora_B.weight", "B"),
            (".lora_B.bias", "bias"),
            (".lora_embedding_A", "A"),
            (".lora_embedding_B", "B"),
        ):
            if key.endswith(tag):
                modules.setdefault(_strip(key[: -len(tag)]), {})[field] = tensor
                break
    if not modules:
        raise ValueError(f"{where}: no LoRA weights (lora_A/lora_B) found")
    for name, parts in sorted(modules.items()):
        if "A" not in parts or "B" not in parts:
            raise ValueError(f"{where}: module {name!r} has only one of lora_A / lora_B")
        r = _pattern_value(rank_pattern, name, r_default)
        alpha = _pattern_value(alpha_pattern, name, alpha_default)
        if parts["A"].shape[0] != r:
            raise ValueError(
                f"{where}: rank mismatch on {name!r}: config says r={r}, lora_A has {parts['A'].shape[0]} rows"
            )
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        yield LoraFactor(name, parts["A"], parts["B"], float(scaling), parts.get("bias"))


def lora_factors(model_or_adapter: Any, adapter_name: str | None = None) -> list[LoraFactor]:
    """All LoRA factors of a peft model (active adapter, or ``adapter_name``) or adapter dir."""
    if isinstance(model_or_adapter, (str, Path)):
        config, state = load_adapter_state(model_or_adapter)
        return list(_factors_from_state(config, state, f"adapter {str(model_or_adapter)!r}"))
    if isinstance(model_or_adapter, torch.nn.Module):
        return list(_factors_from_peft_model(model_or_adapter, adapter_name))
    raise ValueError(
        f"model_or_adapter must be a peft model or an adapter directory path, got {type(model_or_adapter).__name__}"
    )


def _sigma_for(sigma: float | Mapping[str, float], name: str) -> float:
    if isinstance(sigma, Mapping):
        if name not in sigma:
            raise ValueError(f"sigma has no entry for module {name!r}")
        value = sigma[name]
    else:
        value = sigma
    try:
        s = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sigma must be a positive number, got {value!r}") from exc
    if not math.isfinite(s) or s <= 0.0:
        raise ValueError(f"sigma must be finite and > 0 (a standard deviation), got {value!r}")
    return s


def lora_delta_sq_norms(model_or_adapter: Any, adapter_name: str | None = None) -> dict[str, float]:
    """‖ΔW‖_F² per module (float64, including s²‖b‖² for a LoRA bias)."""
    out = {}
    for f in lora_factors(model_or_adapter, adapter_name):
        v = lora_delta_sq_norm(f.A, f.B, f.scaling)
        if f.bias is not None:
            v += f.scaling**2 * float(f.bias.to(torch.float64).square().sum())
        out[f.name] = v
    return out


def load_init_factors(init: Any) -> dict[str, torch.Tensor]:
    """Initial adapter tensors for the "lora" space, keyed like the saved adapter.

    ``init`` is a path to ``lora_init.safetensors`` (or a folder holding it), a peft model, or
    a mapping of tensors.
    """
    if isinstance(init, Mapping):
        return {k: _to_tensor(v, f"init[{k!r}]") for k, v in init.items()}
    if isinstance(init, torch.nn.Module):
        return init_state_from_factors(lora_factors(init))
    if isinstance(init, (str, Path)):
        p = Path(init)
        if p.is_dir():
            p = p / INIT_FILE
        if not p.is_file():
            raise ValueError(f"init file {str(p)!r} does not exist")
        from safetensors.torch import load_file

        return load_file(str(p))
    raise ValueError(f"init must be a path, a peft model or a mapping of tensors, got {type(init).__name__}")


def init_state_from_factors(factors: list[LoraFactor]) -> dict[str, torch.Tensor]:
    """The tensors :func:`load_init_factors` expects, from a list of (initial) factors."""
    state = {}
    for f in factors:
        state[f.name + ".lora_A"] = f.A.detach().clone().contiguous()
        state[f.name + ".lora_B"] = f.B.detach().clone().contiguous()
    return state


def lora_kl(
    model_or_adapter: Any,
    sigma: float | Mapping[str, float],
    space: str = "delta",
    *,
    init: Any = None,
    adapter_name: str | None = None,
) -> float:
    """KL(posterior ‖ prior) in nats for isotropic Gaussians of scale σ around a LoRA adapter.

    space="delta": Σ_modules ‖s·B A‖_F² / (2σ²) — prior N(W_pre, σ²I), posterior N(W_pre + ΔW, σ²I).
    space="lora":  Σ_modules (‖A − A₀‖² + ‖B − B₀‖²) / (2σ²) — prior at the adapter's init.

    Args:
        model_or_adapter: a peft ``PeftModel`` (or any module with LoRA layers), or the path of
            an adapter directory saved with ``save_pretrained``.
        sigma: standard deviation σ > 0, one float or a mapping module name → σ.
        space: "delta" or "lora".
        init: for space="lora", the initial factors (path, peft model or mapping). When
            omitted and ``model_or_adapter`` is a directory, its ``lora_init.safetensors``.
        adapter_name: which adapter of a multi-adapter model (default: the active one).
    """
    if space not in ("delta", "lora"):
        raise ValueError(f"space must be 'delta' or 'lora', got {space!r}")
    factors = lora_factors(model_or_adapter, adapter_name)
    if space == "delta":
        total = 0.0
        for f in factors:
            v = lora_delta_sq_norm(f.A, f.B, f.scaling)
            if f.bias is not None:
                v += f.scaling**2 * float(f.bias.to(torch.float64).square().sum())
            total += v / (2.0 * _sigma_for(sigma, f.name) ** 2)
        return total

    if init is None:
        if isinstance(model_or_adapter, (str, Path)):
            init = Path(model_or_adapter) / INIT_FILE
        else:
            raise ValueError("init is required for space='lora' (the adapter's initial A and B)")
    init_state = load_init_factors(init)
    total = 0.0
    for f in factors:
        ka, kb = f.name + ".lora_A", f.name + ".lora_B"
        if ka not in init_state:
            raise ValueError(f"init has no initial factors for module {f.name!r}")
        a0 = init_state[ka]
        b0 = init_state.get(kb, torch.zeros_like(f.B))
        if a0.shape != f.A.shape or b0.shape != f.B.shape:
            raise ValueError(
                f"init factors for {f.name!r} have shapes {tuple(a0.shape)}, {tuple(b0.shape)}; "
                f"the adapter has {tuple(f.A.shape)}, {tuple(f.B.shape)}"
            )
        sq = sum_sq_diff([f.A, f.B], [a0, b0])
        if f.bias is not None:  # a LoRA bias starts at zero
            sq += float(f.bias.to(torch.float64).square().sum())
        total += sq / (2.0 * _sigma_for(sigma, f.name) ** 2)
    return total
