"""How sure is the observed optimum? A paired bootstrap over test items (and seeds).

All buckets of one (base, objective, n) are evaluated on the same test items, so their losses
are paired item by item. One bootstrap replicate resamples the items (and, when there are
several, the seeds) with replacement and recomputes every bucket's mean loss:

- ``p_best[b]``: the fraction of replicates in which bucket b has the smallest mean loss;
- ``indistinguishable``: the buckets whose paired difference to the observed best,
  mean_b − mean_best, has a bootstrap percentile interval at the stated level that reaches 0
  (the observed best is always in the set). The optimum is *determined* when the set holds the
  observed best alone;
- ``items_needed``: how many test items would detect the runner-up's gap to the best with 80%
  power in a two-sided paired test at ``level`` (z_{1−α/2} = 1.96 at 95%), by a paired normal
  approximation,

      items_needed = ((z_{1−α/2} + z_power) · sd(d) / mean(d))²,   α = 1 − level, z_0.80 = 0.8416,
      d_i = runner-up loss − best loss on item i (each averaged over seeds),

  at the same per-item spread and gap: with that many items the gap reaches z_{1−α/2} standard
  errors in 80% of repeated test sets (``power=0.5`` gives (z · sd(d) / mean(d))², where it
  does so in half of them). It holds the seeds fixed, and more items do not remove seed noise,
  so it is a lower estimate of what determining the optimum takes; compare it with ``n_items``.
  :mod:`pacbayes_sft.racing` spends items sequentially instead, where the buckets are close.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults


@dataclass(frozen=True)
class BestBucket:
    """The observed best bucket and its bootstrap uncertainty."""

    observed: str
    means: dict[str, float]
    p_best: dict[str, float]
    indistinguishable: list[str]
    level: float
    n_items: int
    n_seeds: int
    items_needed: float = float("nan")

    @property
    def determined(self) -> bool:
        return self.indistinguishable == [self.observed]


def _as_table(item_losses: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(item_losses)
    if not names:
        raise ValueError("item_losses must hold at least one bucket")
    arrays = [np.atleast_2d(np.asarray(item_losses[b], dtype=float)) for b in names]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"item_losses must be (seeds × items) arrays of one shape, got {[a.shape for a in arrays]}")
    table = np.stack(arrays)  # buckets × seeds × items
    if not np.isfinite(table).all():
        raise ValueError("item_losses must be finite")
    return names, table


def items_needed(table: np.ndarray, best: int, level: float = 0.95, *, power: float = 0.8) -> float:
    """Test items at which a two-sided paired z-test at ``level`` detects the runner-up's gap to
    bucket ``best`` with probability ``power``: ((z_{1−α/2} + z_power) · sd(d) / mean(d))² (see the
    module docstring); inf when the two tie exactly, NaN with one bucket. ``table`` is
    buckets × seeds × items."""
    from scipy.stats import norm

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    if table.shape[0] < 2:
        return float("nan")
    per_item = table.mean(axis=1)  # buckets × items, seed-averaged
    order = np.argsort(per_item.mean(axis=1), kind="stable")
    second = int(order[1] if order[0] == best else order[0])
    d = per_item[second] - per_item[best]
    gap, sd = float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else 0.0
    if gap <= 0:
        return float("inf")
    z = float(norm.ppf(1 - (1 - level) / 2) + norm.ppf(power))
    return max(1.0, float(np.ceil((z * sd / gap) ** 2)))


def bootstrap_best(
    item_losses: Mapping[str, np.ndarray], *, n_boot: int = defaults.BEST_BUCKET_N_BOOT, level: float = 0.95, seed: int = 0
) -> BestBucket:
    """Bootstrap the best bucket from per-item losses.

    Args:
        item_losses: bucket → losses on the shared test items, shape (items,) or (seeds, items),
            the same items in the same order for every bucket.
        n_boot: bootstrap replicates.
        level: confidence level of the indistinguishable set.
    """
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    names, table = _as_table(item_losses)
    _, n_seeds, n_items = table.shape
    means = table.mean(axis=(1, 2))
    best = int(np.argmin(means))
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))
    for r in range(n_boot):
        s = rng.integers(0, n_seeds, n_seeds)
        i = rng.integers(0, n_items, n_items)
        boot[r] = table[:, s][:, :, i].mean(axis=(1, 2))
    wins = np.bincount(np.argmin(boot, axis=1), minlength=len(names)) / n_boot
    diff_low = np.quantile(boot - boot[:, [best]], (1 - level) / 2, axis=0)
    close = [b for k, b in enumerate(names) if k == best or diff_low[k] <= 0]
    return BestBucket(
        observed=names[best],
        means={b: float(m) for b, m in zip(names, means)},
        p_best={b: float(w) for b, w in zip(names, wins)},
        indistinguishable=close,
        level=level,
        n_items=n_items,
        n_seeds=n_seeds,
        items_needed=items_needed(table, best, level),
    )


def spearman(a, b) -> float:
    """Spearman's rank correlation, or NaN (stated as "undefined" in reports) when there are fewer
    than 3 pairs or either side is constant up to rounding."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or any(np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())) for x in (a, b)):
        return float("nan")
    return float(spearmanr(a, b)[0])


@dataclass(frozen=True)
class GainKept:
    """The share of a reference model's gain over a base that a model keeps, with a paired
    bootstrap percentile interval: (e_base − e_model) / (e_base − e_ref) from per-item losses."""

    estimate: float
    lower: float
    upper: float
    level: float
    n_items: int


def gain_kept(
    base: Any, reference: Any, model: Any, *, n_boot: int = 5000, level: float = 0.95, seed: int = 0
) -> GainKept:
    """Paired bootstrap of the gain kept, (ē_base − ē_model)/(ē_base − ē_ref), resampling the items
    (the same items for all three models, so their losses are paired and their errors correlate).
    Replicates whose reference gain is ≤ 0 count as keeping nothing of an undefined gain: they are
    dropped, and their share is reported through ValueError when it exceeds 1 − level."""
    if not (isinstance(n_boot, int) and n_boot >= 100):
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    arrays = [np.asarray(x, dtype=float) for x in (base, reference, model)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1 or arrays[0].size < 2:
        raise ValueError("base, reference and model must be per-item losses on the same items (1-D, >= 2 items)")
    losses = np.stack(arrays)
    gain = losses[0].mean() - losses[1].mean()
    if not gain > 0:
        raise ValueError(f"the reference does not improve on the base (gain {gain:.4g}): nothing to keep")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, losses.shape[1], size=(n_boot, losses.shape[1]))
    means = losses[:, idx].mean(axis=2)  # models × replicates
    den = means[0] - means[1]
    ok = den > 0
    if ok.mean() < level:
        raise ValueError(f"the reference's gain is not positive in {1 - ok.mean():.0%} of replicates")
    share = (means[0][ok] - means[2][ok]) / den[ok]
    lo, hi = np.quantile(share, [(1 - level) / 2, (1 + level) / 2])
    est = (losses[0].mean() - losses[2].mean()) / gain
    return GainKept(float(est), float(lo), float(hi), level, int(losses.shape[1]))
