"""Bucketing by difficulty: quantile bins (equal counts) or fixed edges, with labels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def quantile_buckets(values: Sequence[float], k: int = 3, labels: Sequence[str] | None = None) -> list[str]:
    """Label each value by its quantile bin (k equal-count bins; ties stay together).

    Default labels: easy/medium/hard for k = 3, else q1..qk.
    """
    import numpy as np

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    vals = np.asarray(values, dtype=float)
    if vals.size == 0 or not np.isfinite(vals).all():
        raise ValueError("values must be a non-empty sequence of finite numbers")
    names = (
        list(labels)
        if labels is not None
        else (["easy", "medium", "hard"] if k == 3 else [f"q{i + 1}" for i in range(k)])
    )
    if len(names) != k:
        raise ValueError(f"labels must have k={k} entries, got {len(names)}")
    edges = np.quantile(vals, np.linspace(0, 1, k + 1)[1:-1])
    return [names[int(np.searchsorted(edges, v, side="right"))] for v in vals]


def edge_buckets(values: Sequence[float], edges: Sequence[float], labels: Sequence[str] | None = None) -> list[str]:
    """Label each value by fixed, increasing edges: bin i holds edges[i-1] <= v < edges[i]."""
    import numpy as np

    e = list(edges)
    if any(b <= a for a, b in itertools.pairwise(e)):
        raise ValueError(f"edges must be strictly increasing, got {edges!r}")
    names = list(labels) if labels is not None else [f"bin{i}" for i in range(len(e) + 1)]
    if len(names) != len(e) + 1:
        raise ValueError(f"labels must have len(edges)+1 = {len(e) + 1} entries, got {len(names)}")
    vals = np.asarray(values, dtype=float)
    if not np.isfinite(vals).all():
        raise ValueError("values must be finite")
    return [names[int(np.searchsorted(e, v, side="right"))] for v in vals]


def quantile_edges(values: Sequence[float], k: int) -> list[float]:
    """The distinct inner edges of k equal-count quantile bins of ``values`` (ties merge edges)."""
    import numpy as np

    qs = np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, k + 1)[1:-1])
    return np.unique(qs).tolist()


def bin_numbers(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """1-based bin of each value: bin i + 1 holds edges[i - 1] <= v < edges[i]."""
    import numpy as np

    return (np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right") + 1).tolist()
