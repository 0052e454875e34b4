"""Argument checks shared by the sequential statistics: bad input raises ``ValueError`` naming
the argument and what was expected."""

from __future__ import annotations

import numpy as np


def check_open_unit(value: float, name: str) -> float:
    """``value`` as a float if it is a number in the open interval (0, 1) (a level, an ε, a δ)."""
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def check_count(value: int, name: str, least: int) -> int:
    """``value`` as an int if it is an integer (not a bool) ≥ ``least`` (items, rounds, buckets)."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= least):
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def check_rounds(x: np.ndarray, sizes: np.ndarray) -> None:
    """Items ``x`` in [0, 1] (one-dimensional, finite) fed in rounds of ``sizes`` (each >= 1,
    adding up to the number of items): what every confidence sequence takes."""
    if x.ndim != 1 or not np.isfinite(x).all() or (x < 0).any() or (x > 1).any():
        raise ValueError("x must be a one-dimensional array of finite values in [0, 1]")
    if sizes.ndim != 1 or (sizes < 1).any() or sizes.sum() != x.size:
        raise ValueError(f"sizes must be round sizes >= 1 that add up to len(x) = {x.size}, got {sizes.tolist()}")
