"""LoRA adapters on disk and in memory: the file format, the initial factors, and the factors
(A, B, scaling, bias) of every adapted module.

An adapter directory is peft's format — ``adapter_config.json`` plus
``adapter_model.safetensors`` (or a weights-only ``adapter_model.bin``) — and, beside it,
``lora_init.safetensors``: the factors at initialisation (B₀ = 0, A₀ = A_init), which the
"lora" prior is centred at. Training writes these files and the estimators read them; both
import this module, which imports neither.

A module's update is ΔW = s·B A (B ∈ R^{m×r}, A ∈ R^{r×k}) with s = lora_alpha/r, or
lora_alpha/√r with rsLoRA; peft's rank_pattern/alpha_pattern set r and alpha per module.
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


def as_float_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(x)
    else:
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    return t


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's rule: a pattern key k matches module name m if m matches ``(.*\\.)?(k)$``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _strip(name: str) -> str:
    return name[len(_PREFIX) :] if name.startswith(_PREFIX) else name


def lora_layers(model: torch.nn.Module, *, perturbed: bool = True) -> list[tuple[str, torch.nn.Module]]:
    """Every LoRA layer of a peft model as (full module name, ``LoraLayer``): the one walk over a
    model's adapted modules that the factors, the posteriors and the training parametrisations use.

    ValueError when the model has no LoRA layer, for DoRA (a magnitude vector rescales the update,
    so it is not ΔW = s·B A) and, when the layers are to be ``perturbed`` (a posterior or a
    parametrisation moves their factors), for LoRA on an embedding (its factors are not modules'
    weights a posterior draws) and for an adapter merged into the base weights (moving the factors
    would no longer change the function as the KL counts it)."""
    from peft.tuners.lora import LoraLayer  # deferred: peft is only needed once a peft model is walked

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not layers:
        raise ValueError("model has no LoRA weights: it has no LoRA layers (pass a peft model)")
    for name, layer in layers:
        for ad in layer.active_adapters:
            if ad in getattr(layer, "lora_magnitude_vector", {}) or getattr(layer, "use_dora", {}).get(ad):
                raise ValueError(f"model: DoRA adapter on {name!r} is not supported (its update is not s·BA)")
            if perturbed and ad in getattr(layer, "lora_embedding_A", {}):
                raise ValueError(f"model: LoRA on the embedding {name!r} is not supported by the posterior")
        if perturbed and getattr(layer, "merged", False):
            raise ValueError(f"model: the adapter of {name!r} is merged into the base weights; unmerge it first")
    return layers


def lora_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(full module name, its ``lora_A``, its ``lora_B``) for every active linear LoRA adapter, in
    :func:`lora_layers` order: the factors a parametrisation over the LoRA weights acts on."""
    return [
        (name, layer.lora_A[ad], layer.lora_B[ad])
        for name, layer in lora_layers(model)
        for ad in layer.active_adapters
        if ad in layer.lora_A
    ]


def _factors_from_peft_model(model: torch.nn.Module, adapter_name: str | None) -> Iterator[LoraFactor]:
    found = False
    for name, module in lora_layers(model, perturbed=False):
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


def load_init_factors(init: Any) -> dict[str, torch.Tensor]:
    """Initial adapter tensors for the "lora" space, keyed like the saved adapter.

    ``init`` is a path to ``lora_init.safetensors`` (or a folder holding it), a peft model, or
    a mapping of tensors.
    """
    if isinstance(init, Mapping):
        return {k: as_float_tensor(v, f"init[{k!r}]") for k, v in init.items()}
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


def save_init_state(state: Mapping[str, torch.Tensor], out_dir: str | Path) -> Path:
    """Write initial factors (as from :func:`init_state_from_factors`) to ``out_dir/lora_init.safetensors``."""
    from safetensors.torch import save_file

    path = Path(out_dir) / INIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(state), str(path))
    return path


def attach_adapter(
    base_model: torch.nn.Module, adapter_dir: str | Path, *, trainable: bool = False, base_name: str | None = None
) -> torch.nn.Module:
    """A saved LoRA adapter loaded onto ``base_model`` (a peft model; in eval mode unless
    ``trainable``). ValueError when the folder holds no adapter or the adapter was trained on a
    base of another shape, so a user sees which adapter and why rather than a tensor-size trace."""
    from peft import PeftModel  # deferred: peft is only needed once an adapter is loaded

    adir = Path(adapter_dir)
    if not (adir / "adapter_config.json").is_file():
        raise ValueError(f"adapter directory {str(adir)!r} has no adapter_config.json")
    try:
        model = PeftModel.from_pretrained(base_model, str(adir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        base = f"base model {base_name!r}" if base_name else "this base model"
        raise ValueError(f"adapter {str(adir)!r} does not fit {base}: {str(exc).splitlines()[0]}") from None
    # peft only warns when the file's modules and the base's adapted modules differ (another base
    # whose shapes happen to fit): refuse, so the model never runs with a partly loaded adapter
    saved, loaded = {f.name for f in lora_factors(adir)}, {f.name for f in lora_factors(model)}
    if saved != loaded:
        base = f"base model {base_name!r}" if base_name else "this base model"
        odd = sorted(saved - loaded) or sorted(loaded - saved)
        what = "modules not in the base" if saved - loaded else "base modules without adapter weights"
        raise ValueError(f"adapter {str(adir)!r} does not fit {base}: {what}: {odd[:3]}")
    return model if trainable else model.eval()
