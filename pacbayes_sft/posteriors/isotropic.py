"""Isotropic Gaussian posteriors around a LoRA-adapted model, the default family of the certificate
(:func:`isotropic_family`); their Monte-Carlo risk is :mod:`pacbayes_sft.estimators.mc_risk`.

Two parameter spaces (see :mod:`pacbayes_sft.posteriors.lora`):

- ``"lora"``: θ ~ N(θ_adapter, σ²I) over the LoRA factors A, B. A sample is drawn by adding
  σ·ε to the factors *in place*; the originals (adapter-sized, never the model's weights)
  are kept and copied back, so the restore is bit-exact.
- ``"delta"``: W ~ N(W_pre + ΔW, σ²I) over every adapted weight matrix. Adding noise to the
  frozen weights in place and subtracting it again is not bit-exact in floating point, and
  keeping the originals would copy most of the model. Instead each LoRA layer gets a forward
  hook that adds x·Eᵀ for a noise matrix E regenerated from (seed, sample, layer) on every call:
  the weights are never written, memory stays at one layer's noise, and a sample is a pure
  function of its seed.

The stochastic empirical risk E_π R̂_S = (1/n) Σ_i E_{θ~π} ℓ(θ, z_i) is bounded from above in
one of two Monte-Carlo schemes, both through :func:`pacbayes_sft.bounds.mc_risk_upper`
(kl⁻¹(R̂, ln(2/δ)/N) with N independent losses in [0, 1]):

- ``shared`` (Langford–Caruana): m samples θ_1..θ_m, each scoring all n examples; the m
  per-sample risks are the independent variables, so N = m.
- ``per_example``: every example z_i gets its own d independent samples θ_ij and the n·d
  losses ℓ(θ_ij, z_i) are independent given S, with mean E_π R̂_S; N = n·d. The Chernoff
  bound exp(−N·kl(R̂‖μ)) holds for independent [0, 1] variables with mean of means μ, so the
  same kl⁻¹ applies. With n in the hundreds this term is far tighter than with m ≈ 10 shared
  samples, at the same number of example evaluations when d·n = m·n.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..adapters import lora_layers
from ..lm.rows import row_listener
from .base import PosteriorFamily, Prior, check_sigma
from .kl import kl_divergence, register_kl
from .lora import lora_kl, lora_scales_kl

LAYER_SLOTS = 256
"""Adapted layers a posterior seeds apart at least (more when the model has more LoRA layers)."""


@functools.lru_cache(maxsize=1024)
def _seed_words(seed: int) -> tuple[int, int]:
    hi, lo = np.random.SeedSequence(seed).generate_state(2)
    return int(hi), int(lo)


def _seed(seed: int, row: int = 0, layer: int = 0, slots: int = LAYER_SLOTS) -> int:
    """The generator seed of posterior draw ``row`` in adapted layer ``layer``, for a posterior
    seeded ``seed`` whose model has at most ``slots`` adapted layers: 63 bits whose low 32 bits
    (all that torch's CPU generator keys on) are the posterior's own offset plus row·slots + layer.
    So within one posterior no two (row, layer) pairs share a generator state, and every per-row
    draw is independent of every other, as the kl⁻¹ Monte-Carlo bound assumes. The offset and the
    high bits come from ``numpy.random.SeedSequence``."""
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not (0 <= layer < slots and 0 <= row < 2**32 // slots):
        raise ValueError(
            f"posterior draw {row} of layer {layer}: one posterior seeds at most {2**32 // slots} draws apart "
            f"over {slots} layers; use fewer (example, draw) losses per sigma (bound.mc_examples)"
        )
    hi, lo = _seed_words(seed)
    return ((hi & 0x7FFFFFFF) << 32) | ((lo + row * slots + layer) % 2**32)


class GaussianPosterior:
    """Isotropic Gaussian posterior N(mean, σ²I) around a peft LoRA model.

    Args:
        model: a peft model whose active adapter is the posterior mean.
        sigma: standard deviation σ ≥ 0 (σ = 0 gives the point model), or in the lora space a
            mapping module name → σ (per-module posterior scales, e.g. learned ones).
        space: "lora" (noise on the adapter factors) or "delta" (noise on the adapted weights).
        seed: base seed; sample j uses a seed derived from (seed, j).

    Every batch row can carry its own draw (:meth:`sample_rows`: ``per_row`` is True), and
    :meth:`kl` is the closed form against a :class:`~pacbayes_sft.posteriors.base.Prior`.
    """

    per_row = True

    def __init__(
        self, model: torch.nn.Module, sigma: float | Mapping[str, float], space: str = "delta", *, seed: int = 0
    ) -> None:
        if space not in ("lora", "delta"):
            raise ValueError(f"space must be 'lora' or 'delta', got {space!r}")
        self.scales = None
        if isinstance(sigma, Mapping):  # per-module scales: module name -> sigma
            self.scales = {k: check_sigma(v) for k, v in sigma.items()}
            s = float(np.mean(list(self.scales.values())))
        else:
            s = check_sigma(sigma)
        self.model = model
        self.sigma = s
        self.space = space
        self.seed = int(seed)
        self._layers = lora_layers(model)
        self._slots = max(LAYER_SLOTS, len(self._layers))  # (row, layer) -> row * slots + layer

    def _lora_params(self) -> list[tuple[torch.nn.Parameter, float]]:
        """(factor, its posterior scale) for every LoRA factor."""
        params = []
        for name, layer in self._layers:
            s = self._scale(name)
            for ad in layer.active_adapters:
                if ad in layer.lora_A:
                    params += [(layer.lora_A[ad].weight, s), (layer.lora_B[ad].weight, s)]
        return params

    def _scale(self, name: str) -> float:
        """σ of the module ``name`` (its full name in the model, or as :func:`lora_factors` names it)."""
        if self.scales is None:
            return self.sigma
        for key in (name, name.removeprefix("base_model.model.")):
            if key in self.scales:
                return self.scales[key]
        raise ValueError(f"sigma has no entry for module {name!r}")

    def kl(self, prior: Prior) -> float:
        """KL(self ‖ prior) in nats (:func:`~pacbayes_sft.posteriors.kl.kl_divergence`)."""
        return kl_divergence(self, prior)

    @contextmanager
    def sample(self, index: int) -> Iterator[torch.nn.Module]:
        """Context manager: inside it the model computes with posterior sample ``index``."""
        if self.sigma == 0.0:
            yield self.model
            return
        if self.space == "lora":
            params = self._lora_params()
            originals = [p.detach().clone() for p, _ in params]
            gen = torch.Generator(device="cpu").manual_seed(_seed(self.seed, index))
            try:
                with torch.no_grad():
                    for p, s in params:
                        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
                        p.add_(noise.to(device=p.device, dtype=p.dtype), alpha=s)
                yield self.model
            finally:
                with torch.no_grad():
                    for (p, _), o in zip(params, originals):
                        p.copy_(o)
            return

        handles = []
        for li, (name, layer) in enumerate(self._layers):
            base = layer.get_base_layer()
            weight = getattr(base, "weight", None)
            if weight is None or weight.ndim != 2:
                raise ValueError(
                    f"space='delta' supports linear (and Conv1D) LoRA layers only, got {type(base).__name__}"
                )
            fan_in_fan_out = bool(getattr(layer, "fan_in_fan_out", False))
            layer_seed = _seed(self.seed, index, li, self._slots)
            layer_sigma = self._scale(name)

            def hook(module, inputs, output, _w=weight, _fifo=fan_in_fan_out, _s=layer_seed, sigma=layer_sigma):
                gen = torch.Generator(device=_w.device).manual_seed(_s)
                noise = torch.randn(_w.shape, generator=gen, device=_w.device, dtype=_w.dtype)
                x = inputs[0].to(_w.dtype)
                extra = x @ noise if _fifo else x @ noise.T
                return output + sigma * extra.to(output.dtype)

            handles.append(layer.register_forward_hook(hook))
        try:
            yield self.model
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def sample_rows(self, indices: Sequence[int]) -> Iterator[torch.nn.Module]:
        """Context manager: inside it, row r of every batch uses posterior sample ``indices[r]``.

        Row r computes exactly what :meth:`sample` (``indices[r]``) computes for that row alone (the
        same noise, up to float rounding), so one batched forward pass — or one batched generation
        with a KV cache — scores each example under its own independent draw. Every batch must
        have ``len(indices)`` rows, or the rows a decoder announced with
        :func:`~pacbayes_sft.lm.rows.select_rows` (a batch narrowed to rows still decoding). The noise of every row is drawn once on entry and cached
        (``len(indices)`` × the adapted weights in "delta", × the LoRA factors in "lora").
        """
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("indices must name at least one posterior sample")
        if self.sigma == 0.0:
            yield self.model
            return
        make = self._delta_row_hook if self.space == "delta" else self._lora_row_hook
        noise = None if self.space == "delta" else self._lora_row_noise(idx)
        made = [make(li, name, layer, idx, noise) for li, (name, layer) in enumerate(self._layers)]
        handles = [module.register_forward_hook(hook) for hooks, _ in made for module, hook in hooks]

        def follow(rows: torch.Tensor | None) -> None:  # a decoder narrowed its batch to these rows
            for _, narrow in made:
                narrow(rows)

        try:
            with row_listener(self.model, follow):
                yield self.model
        finally:
            for h in handles:
                h.remove()

    def _delta_row_hook(self, li: int, name: str, layer: torch.nn.Module, idx: list[int], _noise=None):
        """x ↦ x·E_rᵀ per row r, E_r the layer's noise of sample idx[r] (as in :meth:`sample`)."""
        weight = getattr(layer.get_base_layer(), "weight", None)
        if weight is None or weight.ndim != 2:
            raise ValueError("space='delta' supports linear (and Conv1D) LoRA layers only")
        gens = [torch.Generator(device=weight.device).manual_seed(_seed(self.seed, k, li, self._slots)) for k in idx]
        noise = torch.stack(
            [torch.randn(weight.shape, generator=g, device=weight.device, dtype=weight.dtype) for g in gens]
        )
        # Conv1D stores (in, out); Linear stores (out, in).
        spec = "b...i,bio->b...o" if getattr(layer, "fan_in_fan_out", False) else "b...i,boi->b...o"
        sigma = self._scale(name)
        state = {"noise": noise}

        def narrow(rows: torch.Tensor | None) -> None:
            state["noise"] = noise if rows is None else noise[rows.to(noise.device)]

        def hook(module, inputs, output):
            x = inputs[0].to(weight.dtype)
            _check_rows(x, state["noise"].shape[0])
            return output + sigma * torch.einsum(spec, x, state["noise"]).to(output.dtype)

        return [(layer, hook)], narrow

    def _lora_row_noise(self, idx: list[int]) -> dict[int, torch.Tensor]:
        """Per factor (keyed by ``id`` of its parameter), the stacked noise of every row's sample,
        drawn in :meth:`_lora_params` order from each sample's generator, as :meth:`sample` draws."""
        params = self._lora_params()
        per_row = []
        for k in idx:
            gen = torch.Generator(device="cpu").manual_seed(_seed(self.seed, k))
            per_row.append([torch.randn(p.shape, generator=gen, dtype=torch.float32) for p, _ in params])
        return {id(p): torch.stack([row[j] for row in per_row]) for j, (p, _) in enumerate(params)}

    def _lora_row_hook(self, li: int, name: str, layer: torch.nn.Module, idx: list[int], noise):
        """Row r's LoRA branch s·(B + σE_B,r)(A + σE_A,r)x, by replacing the outputs of the layer's
        ``lora_A`` and ``lora_B`` modules with the row's factors: peft's vanilla branch is
        ``lora_B(lora_A(dropout(x))) * scaling``, so nothing else changes and no clean branch is
        computed twice. Returns the (module, hook) pairs and the narrowing function."""
        sigma = self._scale(name)
        hooks, factors = [], []
        for ad in (a for a in layer.active_adapters if a in layer.lora_A):
            if ad in getattr(layer, "lora_variant", {}):  # newer peft: any variant changes the branch
                raise ValueError(f"per-row draws support vanilla LoRA only; module {name!r} uses a LoRA variant")
            a_w, b_w = layer.lora_A[ad].weight, layer.lora_B[ad].weight
            ea, eb = (noise[id(w)].to(device=w.device, dtype=w.dtype) for w in (a_w, b_w))
            rows = {"A": a_w + sigma * ea, "B": b_w + sigma * eb}
            factors.append((rows, {"A": rows["A"], "B": rows["B"]}))
            hooks += [(layer.lora_A[ad], _row_factor_hook(rows, "A", "b...i,bri->b...r")),
                      (layer.lora_B[ad], _row_factor_hook(rows, "B", "b...r,bor->b...o"))]  # fmt: skip

        def narrow(rows: torch.Tensor | None) -> None:
            for live, full in factors:
                live.update(full if rows is None else {k: v[rows] for k, v in full.items()})

        return hooks, narrow


def _row_factor_hook(rows: dict, key: str, spec: str):
    """A forward hook giving each batch row its own factor ``rows[key][r]`` (the live, possibly
    narrowed, stack) in place of the module's shared weight."""

    def hook(module, inputs, output):
        x = inputs[0]
        _check_rows(x, rows[key].shape[0])
        out = torch.einsum(spec, x.to(rows[key].dtype), rows[key])
        if getattr(module, "bias", None) is not None:  # peft's lora_bias: B has one, shared by every draw
            out = out + module.bias
        return out.to(output.dtype)

    return hook


def _check_rows(x: torch.Tensor, rows: int) -> None:
    if x.shape[0] != rows:
        raise ValueError(f"sample_rows was given {rows} sample indices but the batch has {x.shape[0]} rows")


@register_kl(GaussianPosterior, Prior)
def _kl_gaussian(q: GaussianPosterior, p: Prior) -> float:
    """KL(N(θ_q, s²I) ‖ N(centre, σ_p²I)) in nats over q's space.

    When the prior takes the posterior's scale (``p.sigma`` None, or equal to q's one σ) this is
    ‖θ_q − centre‖²/(2σ²) per module (:func:`~pacbayes_sft.posteriors.lora.lora_kl`); with scales
    that differ (per-module posterior scales s_m, e.g. learned ones) the variance term
    ½ d_m (s_m²/σ_p² − 1 + ln(σ_p²/s_m²)) is added per module
    (:func:`~pacbayes_sft.posteriors.lora.lora_scales_kl`; "lora" space only)."""
    scales = None if q.scales is None else {k.removeprefix("base_model.model."): v for k, v in q.scales.items()}
    if p.sigma is None or (scales is None and q.sigma == p.sigma):
        return lora_kl(q.model, q.sigma if scales is None else scales, q.space, init=p.init, prior=p.centre)
    if q.space != "lora":
        raise ValueError(
            f"a prior scale ({p.sigma!r}) other than the posterior's is supported in the 'lora' space only, "
            f"got space {q.space!r}"
        )
    centre = p.centre if p.centre is not None else p.init
    if centre is None:
        raise ValueError("prior.init (the adapter's initial factors) or prior.centre is required in the 'lora' space")
    if scales is None:
        scales = {name.removeprefix("base_model.model."): q.sigma for name, _ in q._layers}
    return lora_scales_kl(q.model, centre, scales, p.sigma)


def isotropic_family(
    model: torch.nn.Module, space: str, grid: Sequence[float], *, init: Any = None, prior: Any = None
) -> PosteriorFamily:
    """The default family of the certificate: N(θ_adapter, σ²I) in ``space`` for every σ of
    ``grid``, against the prior N(centre, σ²I) of the same σ — centred at the pretrained weights
    ("delta"), at the initial factors ``init`` ("lora"), or at the adapter ``prior`` (a
    data-dependent prior, trained on examples the bound does not use). A σ may also be a mapping
    module name → σ (the per-module-family search)."""
    if space not in ("lora", "delta"):
        raise ValueError(f"space must be 'lora' or 'delta', got {space!r}")
    centre = Prior(sigma=None, centre=prior, init=init)

    def kl(sigma: Any) -> float:
        return GaussianPosterior(model, sigma, space).kl(centre)

    return PosteriorFamily(space, list(grid), lambda sigma, seed: GaussianPosterior(model, sigma, space, seed=seed), kl)
