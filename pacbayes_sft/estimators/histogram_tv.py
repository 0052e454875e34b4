"""Total variation between the empirical distributions of a discrete attribute.

TV(P̂, Q̂) = ½ Σ_k |p̂_k − q̂_k| over the union of observed values k (p̂_k, q̂_k the empirical
frequencies). For an attribute φ(x) (op count, length, ...) the data-processing inequality gives
TV(φ#P, φ#Q) ≤ TV(P, Q): an attribute TV is a *lower* proxy of the TV between the texts, while
the plug-in estimate itself is biased upward at small sample sizes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def _values(x: Any, name: str) -> list:
    if isinstance(x, (str, bytes)) or not isinstance(x, Iterable):
        raise ValueError(f"{name} must be a sequence of discrete values, got {type(x).__name__}")
    vals = list(x.tolist() if hasattr(x, "tolist") else x)
    if not vals:
        raise ValueError(f"{name} must not be empty")
    for v in vals:
        if isinstance(v, float) and v != v:
            raise ValueError(f"{name} must not contain NaN")
    return vals


def histogram_tv(p_values: Iterable[Any], q_values: Iterable[Any]) -> float:
    """½ Σ_k |p̂_k − q̂_k| between the empirical distributions of two samples of discrete values."""
    p = _values(p_values, "p_values")
    q = _values(q_values, "q_values")
    cp, cq = Counter(p), Counter(q)
    n_p, n_q = len(p), len(q)
    return 0.5 * sum(abs(cp[k] / n_p - cq[k] / n_q) for k in set(cp) | set(cq))
