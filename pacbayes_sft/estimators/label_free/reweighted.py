"""The reweighted label-free estimators as registry functions: the target risk from a labelled
*pool* that spans every difficulty, reweighted to the target prompts
(:mod:`pacbayes_sft.estimators.target_risk` holds the maths).

- ``iw``: importance weights r̂ = dT/dP from a cross-fitted, calibrated pool-vs-target classifier;
  R̂_T = Σ r̂_i e_i / Σ r̂_i;
- ``iw_slices``: the target's shares π̂ of the pool's difficulty slices by black-box shift
  estimation; R̂_T = Σ_j π̂_j ē_j.

When the target lies outside the pool's support (or the slice shares are ill-determined), no
reweighting recovers its risk: the row then falls back to DoC (difference of confidences, when
the source confidences are given) and says so in its assumptions, with ``details["fallback"] = 1``;
without them it keeps the reweighted estimate and carries the warning.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ...bounds.domain_adaptation import LabelFreeEstimate, as_binary
from ..target_risk import DensityRatioWeights, SliceWeights
from .methods import DoC, bootstrap_options

__all__ = ["DOC_INPUTS", "iw_estimate", "iw_slices_estimate"]

DOC_INPUTS = ("source_conf", "source_correct", "target_conf")
"""What the DoC fallback reads."""


_FITTED: OrderedDict[str, Any] = OrderedDict()
_CACHE_SIZE = 8  # the weights depend on the prompts only: every cell of a sweep shares one target's fit


def _fitted(kind: str, seed: int, *parts: Any) -> Any:
    """The weights ``kind`` fitted on ``parts`` (pool prompts[, slices], target prompts), cached by
    content: a report estimates many cells against the same pool and target."""
    key = hashlib.sha256(json.dumps([kind, seed, *map(list, parts)], default=str).encode()).hexdigest()
    if key not in _FITTED:
        est = DensityRatioWeights(random_state=seed) if kind == "iw" else SliceWeights(random_state=seed)
        _FITTED[key] = est.fit(*parts)
        if len(_FITTED) > _CACHE_SIZE:
            _FITTED.popitem(last=False)
    _FITTED.move_to_end(key)
    return _FITTED[key]


def _pool_errors(inputs: Any) -> list[float]:
    correct = as_binary(inputs.pool_correct, "pool_correct")
    return [1.0 - float(c) for c in correct]


def _or_doc(est: LabelFreeEstimate, fitted: Any, inputs: Any, settings: Any) -> LabelFreeEstimate:
    """``est``, or DoC under ``est``'s name when the fitted weights report poor overlap and DoC's
    inputs are given (then the assumptions say why)."""
    if fitted.overlap_ok_ or any(getattr(inputs, k) is None for k in DOC_INPUTS):
        return est
    doc = DoC(**bootstrap_options(settings)).fit(inputs.source_conf, inputs.source_correct).predict(inputs.target_conf)
    text = f"{fitted.warning_}; fell back to DoC. {doc.assumptions}"
    return replace(doc, name=est.name, assumptions=text, details=dict(est.details) | {"fallback": 1.0})


def iw_estimate(inputs: Any, settings: Any) -> LabelFreeEstimate:
    """``iw``: the pool's errors weighted by a calibrated pool-vs-target classifier's density ratio."""
    w = _fitted("iw", settings.seed, inputs.pool_prompts, inputs.target_prompts)
    est = replace(w.risk(_pool_errors(inputs), **bootstrap_options(settings)), name="iw")
    return _or_doc(est, w, inputs, settings)


def iw_slices_estimate(inputs: Any, settings: Any) -> LabelFreeEstimate:
    """``iw_slices``: the pool's per-slice errors weighted by the target's estimated slice shares."""
    if len(inputs.pool_slices) != len(inputs.pool_prompts):
        raise ValueError(f"pool_slices must hold one slice per pool prompt ({len(inputs.pool_prompts)}), "
                         f"got {len(inputs.pool_slices)}")  # fmt: skip
    w = _fitted("iw_slices", settings.seed, inputs.pool_prompts, inputs.pool_slices, inputs.target_prompts)
    est = replace(w.risk(_pool_errors(inputs), **bootstrap_options(settings)), name="iw_slices")
    shares = {f"share_{s}": float(p) for s, p in zip(w.slices_.tolist(), w.target_shares_)}
    est = replace(est, details=dict(est.details) | shares)
    return _or_doc(est, w, inputs, settings)
