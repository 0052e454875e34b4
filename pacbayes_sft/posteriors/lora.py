"""Squared norms and Gaussian KLs of LoRA adapters, and the scale of the parameters a prior sits at.

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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..adapters import (
    ADAPTER_WEIGHTS,
    INIT_FILE,
    LoraFactor,
    as_float_tensor,
    init_state_from_factors,
    load_adapter_state,
    load_init_factors,
    lora_factors,
    lora_layers,
)
from .kl import gaussian_kl, sum_sq_diff

__all__ = [
    "ADAPTER_WEIGHTS",
    "INIT_FILE",
    "LoraFactor",
    "init_state_from_factors",
    "load_adapter_state",
    "load_init_factors",
    "lora_delta_sq_norm",
    "lora_delta_sq_norms",
    "lora_factors",
    "lora_kl",
    "lora_scales_kl",
    "module_family",
    "prior_centre_rms",
]


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
    a = _as_matrix(as_float_tensor(A, "A"), "A", 0)
    b = _as_matrix(as_float_tensor(B, "B"), "B", 1)
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


def _module_delta_sq(f: LoraFactor) -> float:
    """‖ΔW‖_F² of one module in float64 (+ s²‖b‖² for a LoRA bias)."""
    v = lora_delta_sq_norm(f.A, f.B, f.scaling)
    if f.bias is not None:
        v += f.scaling**2 * float(f.bias.to(torch.float64).square().sum())
    return v


def lora_delta_diff_sq_norm(f: LoraFactor, g: LoraFactor) -> float:
    """‖s_f B_f A_f − s_g B_g A_g‖_F² in float64 without forming either product:

        ‖ΔW_f‖² + ‖ΔW_g‖² − 2 s_f s_g tr((B_fᵀ B_g)(A_g A_fᵀ)),   O((m + k) r_f r_g) work,

    plus ‖s_f b_f − s_g b_g‖² for LoRA biases. The two modules may have different ranks."""
    if f.A.shape[1:] != g.A.shape[1:] or f.B.shape[0] != g.B.shape[0]:
        raise ValueError(f"modules {f.name!r} and {g.name!r} adapt weights of different shapes")
    a_f, b_f = f.A.to(torch.float64).reshape(f.A.shape[0], -1), f.B.to(torch.float64).reshape(f.B.shape[0], -1)
    a_g, b_g = g.A.to(torch.float64).reshape(g.A.shape[0], -1), g.B.to(torch.float64).reshape(g.B.shape[0], -1)
    cross = float(torch.trace((b_f.T @ b_g) @ (a_g @ a_f.T)))
    sq = _module_delta_sq(LoraFactor(f.name, f.A, f.B, f.scaling)) + _module_delta_sq(
        LoraFactor(g.name, g.A, g.B, g.scaling)
    )
    sq -= 2.0 * f.scaling * g.scaling * cross
    if f.bias is not None or g.bias is not None:
        zf = f.bias if f.bias is not None else torch.zeros_like(g.bias)
        zg = g.bias if g.bias is not None else torch.zeros_like(f.bias)
        sq += float((f.scaling * zf.to(torch.float64) - g.scaling * zg.to(torch.float64)).square().sum())
    return max(sq, 0.0)


def lora_delta_sq_norms(model_or_adapter: Any, adapter_name: str | None = None) -> dict[str, float]:
    """‖ΔW‖_F² per module (float64, including s²‖b‖² for a LoRA bias)."""
    return {f.name: _module_delta_sq(f) for f in lora_factors(model_or_adapter, adapter_name)}


def lora_kl(
    model_or_adapter: Any,
    sigma: float | Mapping[str, float],
    space: str = "delta",
    *,
    init: Any = None,
    adapter_name: str | None = None,
    prior: Any = None,
) -> float:
    """KL(posterior ‖ prior) in nats for isotropic Gaussians of scale σ around a LoRA adapter.

    space="delta": Σ_modules ‖s·B A‖_F² / (2σ²) — prior N(W_pre, σ²I), posterior N(W_pre + ΔW, σ²I).
    space="lora":  Σ_modules (‖A − A₀‖² + ‖B − B₀‖²) / (2σ²) — prior at the adapter's init.
    With ``prior`` (a *data-dependent* prior: another adapter, trained on data the bound does not
    use), the prior is centred at that adapter instead: Σ ‖ΔW − ΔW_prior‖² / (2σ²) in the delta
    space, Σ (‖A − A_prior‖² + ‖B − B_prior‖²) / (2σ²) in the lora space.

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
    if prior is not None:
        centre = {g.name: g for g in lora_factors(prior)}
        missing = [f.name for f in factors if f.name not in centre]
        if missing:
            raise ValueError(f"prior has no LoRA factors for modules {missing[:3]}")
        if space == "delta":
            return sum(
                lora_delta_diff_sq_norm(f, centre[f.name]) / (2.0 * _sigma_for(sigma, f.name) ** 2) for f in factors
            )
        init = init_state_from_factors(list(centre.values()))
    if space == "delta":
        return sum(_module_delta_sq(f) / (2.0 * _sigma_for(sigma, f.name) ** 2) for f in factors)

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
        a0 = init_state[ka].to(f.A.device)  # saved factors load on the CPU; the adapter may sit on a GPU
        b0 = init_state[kb].to(f.B.device) if kb in init_state else torch.zeros_like(f.B)
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


def module_family(name: str) -> str:
    """The family of a LoRA module: the last component of its name (q_proj, v_proj, c_attn, ...)."""
    return name.rsplit(".", 1)[-1]


def prior_centre_rms(
    model_or_adapter: Any, space: str = "delta", *, init: Any = None, family: str | None = None
) -> float:
    """RMS of the parameters the prior is centred at — the scale a relative σ grid is a multiple of.

    space="delta": RMS of the pretrained weight matrices that LoRA adapts (needs a peft model).
    space="lora": RMS of the initial A factors (B₀ = 0 carries no scale).
    Both are fixed before the fine-tuning data are seen, so a grid built on them is a valid prior grid.
    ``family`` restricts the RMS to one module family (:func:`module_family`).
    """
    if space == "delta":
        if not isinstance(model_or_adapter, torch.nn.Module):
            raise ValueError("a relative sigma grid in the 'delta' space needs the peft model (the base weights)")
        sq, count = 0.0, 0
        for mname, module in lora_layers(model_or_adapter, perturbed=False):
            if family is None or module_family(mname) == family:
                w = module.get_base_layer().weight.detach().to(torch.float64)
                sq, count = sq + float(w.square().sum()), count + w.numel()
        if not count:
            raise ValueError(f"model has no LoRA layers{'' if family is None else f' of family {family!r}'}")
        return math.sqrt(sq / count)
    if space != "lora":
        raise ValueError(f"space must be 'delta' or 'lora', got {space!r}")
    if init is None:
        if not isinstance(model_or_adapter, (str, Path)):
            raise ValueError("init is required for a relative sigma grid in the 'lora' space")
        init = Path(model_or_adapter) / INIT_FILE
    a = [
        t.to(torch.float64)
        for k, t in load_init_factors(init).items()
        if k.endswith(".lora_A") and (family is None or module_family(k.removesuffix(".lora_A")) == family)
    ]
    if not a:
        raise ValueError(f"init has no initial A factors{'' if family is None else f' for family {family!r}'}")
    return math.sqrt(sum(float(t.square().sum()) for t in a) / sum(t.numel() for t in a))


def lora_scales_kl(posterior_mean: Any, prior_centre: Any, scales: Mapping[str, float], sigma_p: float) -> float:
    """KL(N(Q, diag s²) ‖ N(P, σ_p² I)) over the LoRA factors, in nats, with one posterior scale
    s_m per module m (d_m factor entries):

        Σ_m ½ [ d_m (s_m²/σ_p² − 1 + ln(σ_p²/s_m²)) + (‖A_m − A_m^P‖² + ‖B_m − B_m^P‖²)/σ_p² ].

    ``posterior_mean`` and ``prior_centre``: adapters (models or folders) or, for the centre, a
    mapping of ``module.lora_A`` / ``module.lora_B`` tensors (the initial factors: a data-free
    prior). ``scales`` is keyed by module name, with or without the peft prefix."""
    q = {f.name: f for f in lora_factors(posterior_mean)}
    if isinstance(prior_centre, Mapping) or (isinstance(prior_centre, (str, Path)) and Path(prior_centre).is_file()):
        state = load_init_factors(prior_centre)
        p = {
            name: LoraFactor(
                name, state[name + ".lora_A"], state.get(name + ".lora_B", torch.zeros_like(f.B)), f.scaling
            )
            for name, f in q.items()
            if name + ".lora_A" in state
        }
    else:
        p = {f.name: f for f in lora_factors(prior_centre)}
    if q.keys() != p.keys():
        raise ValueError("the posterior mean and the prior centre must adapt the same modules")
    short = {k.removeprefix("base_model.model."): v for k, v in scales.items()}
    missing = [k for k in q if k not in short]
    if missing:
        raise ValueError(f"scales has no entry for module {missing[0]!r}")

    def f64(f: LoraFactor) -> list[torch.Tensor]:
        return [f.A.double(), f.B.double()]

    return float(sum(gaussian_kl(f64(q[k]), f64(p[k]), short[k], sigma_p) for k in q))
