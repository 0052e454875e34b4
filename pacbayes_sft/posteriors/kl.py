"""Closed-form KL divergences between a posterior and a prior, in nats.

A registry in the style of ``torch.distributions.kl``: :func:`register_kl` records the closed form
of KL(q ‖ p) for a (posterior type, prior type) pair and :func:`kl_divergence` dispatches on the
types of its arguments (the most specific registered pair along both MROs), so a new family adds
its KL beside its own class without touching this module::

    @register_kl(MyPosterior, Prior)
    def _kl_my_posterior(q: MyPosterior, p: Prior) -> float: ...

Below the registry, the Gaussian maths every family's KL reduces to:

KL(N(μ_q, diag s_q²) ‖ N(μ_p, diag s_p²))
    = ½ Σ_i [ s_q,i²/s_p,i² + (μ_q,i − μ_p,i)²/s_p,i² − 1 + ln(s_p,i²/s_q,i²) ]   (nats)

With equal isotropic scales σ this is ‖μ_q − μ_p‖² / (2σ²).

The sum runs tensor by tensor and in chunks of 2^20 elements inside a tensor: inputs are never
concatenated or copied whole. Within a chunk, Σ(μ_q − μ_p)² is one fused pass
(``mse_loss(reduction="sum")``, whose cascade summation keeps the error at O(eps·log n)); chunk
totals are added in float64 with math.fsum, so the relative error stays ~1e-7 (the rounding of
the float32 squares) however many parameters there are — a plain float32 running sum over 10⁸
terms would lose digits. The variance part t² − 1 − 2 ln t (t = σ_q/σ_p) is evaluated in
float64, since it cancels when σ_q ≈ σ_p. σ is a standard deviation (not a variance).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# 2^20 elements per chunk: temporaries of a few MiB, per-call overhead amortised.
CHUNK = 1 << 20

Tensorish = Any  # torch.Tensor | np.ndarray | float

_KL_REGISTRY: dict[tuple[type, type], Callable[[Any, Any], float]] = {}


def register_kl(type_q: type, type_p: type) -> Callable[[Callable[[Any, Any], float]], Callable[[Any, Any], float]]:
    """Decorator: ``fn(q, p) -> float`` (nats) is the closed-form KL(q ‖ p) for posteriors of
    ``type_q`` against priors of ``type_p`` (and their subclasses, unless a more specific pair is
    registered)."""
    if not (isinstance(type_q, type) and isinstance(type_p, type)):
        raise ValueError(f"register_kl expects two classes, got {type_q!r} and {type_p!r}")

    def decorator(fn: Callable[[Any, Any], float]) -> Callable[[Any, Any], float]:
        _KL_REGISTRY[type_q, type_p] = fn
        return fn

    return decorator


def _dispatch(type_q: type, type_p: type) -> Callable[[Any, Any], float] | None:
    """The registered KL of the pair nearest to (type_q, type_p): the smallest total distance along
    the two MROs (ties go to the more specific posterior type), as torch.distributions does."""
    matches = [(mq, mp) for mq, mp in _KL_REGISTRY if issubclass(type_q, mq) and issubclass(type_p, mp)]
    if not matches:
        return None
    mro_q, mro_p = type_q.__mro__, type_p.__mro__
    best = min(matches, key=lambda m: (mro_q.index(m[0]) + mro_p.index(m[1]), mro_q.index(m[0])))
    return _KL_REGISTRY[best]


def kl_divergence(q: Any, p: Any) -> float:
    """KL(q ‖ p) in nats by the closed form registered for their types (:func:`register_kl`).

    ValueError naming both types when no pair is registered (a Monte-Carlo KL is never
    substituted silently: a bound needs the exact value or an upper bound of it)."""
    fn = _dispatch(type(q), type(p))
    if fn is None:
        known = ", ".join(sorted(f"({a.__name__}, {b.__name__})" for a, b in _KL_REGISTRY)) or "none"
        raise ValueError(
            f"no closed-form KL is registered for posterior {type(q).__name__} and prior {type(p).__name__} "
            f"(registered pairs: {known}); add one with @register_kl({type(q).__name__}, {type(p).__name__})"
        )
    value = float(fn(q, p))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"the KL of {type(q).__name__} to {type(p).__name__} is {value!r}, not a finite value >= 0")
    return value


def _as_tensor(x: Tensorish, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray) or np.isscalar(x):
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise ValueError(f"{name} must be a torch.Tensor, numpy array or number, got {type(x).__name__}")
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real floating-point values, got {t.dtype}")
    return t


def _is_stream(x: Any) -> bool:
    return not isinstance(x, (torch.Tensor, np.ndarray, float, int, np.number, str, bytes)) and isinstance(x, Iterable)


def _check_finite_chunk(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")


def _sigma_scalar(s: Tensorish, name: str) -> float | None:
    """Return s as a float if it is a scalar (0-d or one element broadcastable), else None."""
    if isinstance(s, (float, int, np.number)) or (isinstance(s, (np.ndarray, torch.Tensor)) and s.ndim == 0):
        v = float(s)
        if not math.isfinite(v) or v <= 0.0:
            raise ValueError(f"{name} must be finite and > 0 (a standard deviation), got {v!r}")
        return v
    return None


def _pair_kl(mu_q: Tensorish, mu_p: Tensorish, sigma_q: Tensorish, sigma_p: Tensorish, where: str) -> float:
    """KL for one tensor (and its matching sigmas), chunked float64 accumulation."""
    mq = _as_tensor(mu_q, f"mu_q{where}")
    mp = _as_tensor(mu_p, f"mu_p{where}")
    if mq.shape != mp.shape:
        raise ValueError(
            f"mu_q{where} and mu_p{where} must have the same shape, got {tuple(mq.shape)} and {tuple(mp.shape)}"
        )
    if mq.device != mp.device:
        raise ValueError(f"mu_q{where} and mu_p{where} must be on the same device")
    sq_scalar = _sigma_scalar(sigma_q, f"sigma_q{where}")
    sp_scalar = _sigma_scalar(sigma_p, f"sigma_p{where}")
    sq = None if sq_scalar is not None else _as_tensor(sigma_q, f"sigma_q{where}")
    sp = None if sp_scalar is not None else _as_tensor(sigma_p, f"sigma_p{where}")
    for s, nm in ((sq, "sigma_q"), (sp, "sigma_p")):
        if s is not None and s.shape != mq.shape:
            raise ValueError(
                f"{nm}{where} must be a scalar or have the shape of mu_q{where} {tuple(mq.shape)}, got {tuple(s.shape)}"
            )

    numel = mq.numel()
    if numel == 0:
        return 0.0
    fq, fp = _flat_float(mq), _flat_float(mp)
    if fp.dtype != fq.dtype:  # rare: mixed precisions are promoted once
        common = torch.promote_types(fq.dtype, fp.dtype)
        fq, fp = fq.to(common), fp.to(common)
    fsq = _flat_float(sq) if sq is not None else None
    fsp = _flat_float(sp) if sp is not None else None

    mean_parts: list[float] = []  # Σ (μ_q − μ_p)²/σ_p² per chunk
    var_parts: list[float] = []  # Σ (t² − 1 − 2 ln t), t = σ_q/σ_p, per chunk (float64)
    for i in range(0, numel, CHUNK):
        j = min(i + CHUNK, numel)
        a, b = fq[i:j], fp[i:j]
        if fsp is not None:
            sp_c = fsp[i:j]
            if float(sp_c.min()) <= 0.0:
                raise ValueError(f"sigma_p{where} must be > 0 everywhere (a standard deviation)")
            a, b = a / sp_c, b / sp_c
        mean_parts.append(float(F.mse_loss(a, b, reduction="sum")))
        if fsq is not None or fsp is not None:
            if fsq is not None:
                if float(fsq[i:j].min()) <= 0.0:
                    raise ValueError(f"sigma_q{where} must be > 0 everywhere (a standard deviation)")
                t = fsq[i:j].to(torch.float64, copy=True)
            else:
                t = torch.full((j - i,), sq_scalar, dtype=torch.float64)
            if fsp is not None:
                t.div_(fsp[i:j])
            else:
                t.div_(sp_scalar)
            var_parts.append(float(torch.dot(t, t)) - (j - i) - 2.0 * float(t.log_().sum()))
    mean_term = math.fsum(mean_parts)
    if fsp is None:
        mean_term /= sp_scalar**2
    if fsq is None and fsp is None:
        ratio = (sq_scalar / sp_scalar) ** 2
        var_term = numel * (ratio - 1.0 - math.log(ratio))
    else:
        var_term = math.fsum(var_parts)
    total = 0.5 * (mean_term + var_term)
    if not math.isfinite(total):
        for t_, nm in ((fq, "mu_q"), (fp, "mu_p"), (fsq, "sigma_q"), (fsp, "sigma_p")):
            if t_ is not None:
                _check_finite_chunk(t_, f"{nm}{where}")
        raise ValueError(f"KL{where} is not finite: check the inputs' scales")
    return max(total, 0.0)


def _flat_float(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(-1)
    return flat if flat.is_floating_point() else flat.to(torch.float64)


def gaussian_kl(mu_q: Any, mu_p: Any, sigma_q: Any, sigma_p: Any) -> float:
    """KL(N(μ_q, diag σ_q²) ‖ N(μ_p, diag σ_p²)) in nats, summed in float64.

    Args:
        mu_q, mu_p: posterior and prior means. Each a tensor or array, or equal-length
            iterables of them (e.g. ``model.parameters()``), streamed one tensor at a time.
        sigma_q, sigma_p: standard deviations (not variances), > 0. A scalar applies to every
            element; otherwise a tensor/array of the matching shape, or an iterable matching
            the means' iterable.

    Returns:
        The KL as a Python float (nats). Raises ValueError on shape mismatch, σ ≤ 0 or
        non-finite input.
    """
    if _is_stream(mu_q) or _is_stream(mu_p):
        if not (_is_stream(mu_q) and _is_stream(mu_p)):
            raise ValueError("mu_q and mu_p must both be tensors/arrays or both be iterables of them")
        mqs: Iterable = mu_q
        mps: Iterable = mu_p
        sqs = iter(sigma_q) if _is_stream(sigma_q) else None
        sps = iter(sigma_p) if _is_stream(sigma_p) else None
        total = 0.0
        count = 0
        it_p = iter(mps)
        for k, mq in enumerate(mqs):
            try:
                mp = next(it_p)
            except StopIteration:
                raise ValueError(f"mu_p has fewer tensors than mu_q ({k})") from None
            try:
                sq = next(sqs) if sqs is not None else sigma_q
                sp = next(sps) if sps is not None else sigma_p
            except StopIteration:
                raise ValueError(f"sigma iterables have fewer tensors than mu_q ({k})") from None
            total += _pair_kl(mq, mp, sq, sp, f"[{k}]")
            count += 1
        if next(it_p, None) is not None:
            raise ValueError(f"mu_p has more tensors than mu_q ({count})")
        if count == 0:
            raise ValueError("mu_q must not be empty")
        return total
    return _pair_kl(mu_q, mu_p, sigma_q, sigma_p, "")


def isotropic_kl_from_sq_norm(sq_norm: float, sigma: float) -> float:
    """KL(N(μ_q, σ²I) ‖ N(μ_p, σ²I)) = ‖μ_q − μ_p‖² / (2σ²) from a precomputed squared norm."""
    if not math.isfinite(sq_norm) or sq_norm < 0:
        raise ValueError(f"sq_norm must be finite and >= 0, got {sq_norm!r}")
    s = _sigma_scalar(sigma, "sigma")
    if s is None:
        raise ValueError(f"sigma must be a positive scalar, got {sigma!r}")
    return sq_norm / (2.0 * s * s)


def sum_sq_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Σ‖a_k − b_k‖² in float64 over matching tensors (streamed, chunked)."""
    return 2.0 * gaussian_kl(list(a), list(b), 1.0, 1.0)
