"""Argument checks shared by the bound functions.

Every public function in :mod:`pacbayes_sft.bounds` validates its inputs with these helpers
so that bad input raises ``ValueError`` naming the argument instead of returning NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ArrayLike = Any  # float, int or numpy array


def as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    """Return ``value`` as a float64 array, refusing NaN, None and non-numeric input."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real number or array of numbers, got {value!r}") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN, got {value!r}")
    return arr


def check_unit_interval(value: ArrayLike, name: str) -> np.ndarray:
    """Check that every entry lies in [0, 1] (a risk or probability)."""
    arr = as_float_array(value, name)
    if ((arr < 0.0) | (arr > 1.0)).any():
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return arr


def check_nonnegative(value: ArrayLike, name: str, *, allow_inf: bool = False) -> np.ndarray:
    arr = as_float_array(value, name)
    if (arr < 0.0).any():
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not allow_inf and np.isinf(arr).any():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def check_delta(delta: ArrayLike, name: str = "delta") -> np.ndarray:
    arr = as_float_array(delta, name)
    if ((arr <= 0.0) | (arr >= 1.0)).any():
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {delta!r}")
    return arr


def check_n(n: ArrayLike, name: str = "n") -> np.ndarray:
    arr = as_float_array(n, name)
    if (arr < 1.0).any() or np.isinf(arr).any():
        raise ValueError(f"{name} must be a finite number >= 1, got {n!r}")
    return arr


def check_positive(value: ArrayLike, name: str) -> np.ndarray:
    arr = as_float_array(value, name)
    if (arr <= 0.0).any() or np.isinf(arr).any():
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return arr


def check_loss_range(loss_range: Any) -> tuple[float, float]:
    """Check a ``(a, b)`` loss range with finite ``a < b``."""
    try:
        a, b = (float(x) for x in loss_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss_range must be a pair (a, b) of numbers, got {loss_range!r}") from exc
    if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
        raise ValueError(f"loss_range must be finite with a < b, got {loss_range!r}")
    return a, b


def to_output(arr: np.ndarray) -> float | np.ndarray:
    """Scalars come back as Python floats, arrays as float64 arrays."""
    if arr.ndim == 0:
        return float(arr)
    return arr
