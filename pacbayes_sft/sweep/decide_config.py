"""How a sweep decides each group's answer (``decide`` in a sweep config): after a group's cells are
done, its buckets race on fresh test items until one is the best at ``level``, every contender is
within ``epsilon`` of the best (an ε-tie), or ``max_items`` (the item cap) is reached. The race
itself is :mod:`pacbayes_sft.racing`; ``pacbayes-sft sweep --decide`` (or ``auto: true``) runs it.
``mixtures`` races each group again on other test mixtures (op → weight; fresh items only), and
``max_seeds`` decides over training seeds as well (:mod:`pacbayes_sft.racing.seed_stage`): by
default with one look, once every bucket has ``max_seeds`` seeds; with ``min_seeds`` the first look
comes at that many seeds, and while the answer is open every bucket still in contention gets
another trained seed (each look spends part of δ).
None of it enters the cell hash: deciding reads finished cells, it never changes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults
from ..config import option


def check_mixture(name: str, weights) -> dict[int, float]:
    """A mixture's op → weight mapping, with integer ops ≥ 1 and weights ≥ 0 of positive sum;
    ValueError naming ``decide.mixtures.<name>`` otherwise."""
    where = f"decide.mixtures.{name}"
    if not str(name).replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"decide.mixtures: a mixture's name must be letters, digits, '_' or '-', got {name!r}")
    try:
        out = {int(op): float(w) for op, w in dict(weights).items()}
    except (TypeError, ValueError):
        raise ValueError(f"{where} must map ops (integers) to weights (numbers), got {weights!r}") from None
    if not out or any(op < 1 for op in out) or any(not w >= 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError(f"{where} must map ops >= 1 to weights >= 0 with a positive sum, got {weights!r}")
    return out


def check_min_seeds(min_seeds, max_seeds: int, name: str) -> int:
    """``min_seeds``: 0 (one look, at ``max_seeds``) or a count in [2, max_seeds]; ValueError naming
    ``name`` otherwise."""
    if isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {min_seeds!r}")
    if min_seeds and not 2 <= min_seeds <= max_seeds:
        raise ValueError(f"{name} must be 0 (one look) or lie in [2, max_seeds = {max_seeds}], got {min_seeds}")
    return min_seeds


@dataclass
class DecideConfig:
    """The race every group of a sweep runs to a decision (see the module docstring)."""

    epsilon: float = option(defaults.RACE_EPSILON, "Tolerance of an epsilon-tie, in loss units (0 < epsilon < 1).")
    level: float = option(defaults.RACE_LEVEL, "Probability that each group's answer is right (0 < level < 1).")
    round_items: int = option(defaults.RACE_ROUND_ITEMS, "Fresh test items per round, stratified by test slice.")
    max_items: int = option(
        defaults.RACE_MAX_ITEMS, "Cap on a group's distinct test items, the sweep's own test set included."
    )
    max_seeds: int = option(
        0, "Most training seeds per bucket when deciding over seeds (0: the sweep's own seeds, none trained)."
    )
    min_seeds: int = option(
        0,
        "Seeds per bucket at the first look over seeds; a look at every count up to max_seeds splits delta "
        "(0: one look, at max_seeds, which decided the most groups at a fixed seed budget).",
    )
    mixtures: dict[str, dict[int, float]] = option(
        help="Other test mixtures to race each group on: name -> {op: weight} (fresh items, i.i.d. from the mixture).",
        factory=dict,
    )
    auto: bool = option(False, "Decide after every sweep run, without --decide.")

    def __post_init__(self) -> None:
        for key in ("epsilon", "level"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:
                raise ValueError(f"decide.{key} must lie in (0, 1), got {v!r}")
        for key in ("round_items", "max_items"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"decide.{key} must be an integer >= 1, got {v!r}")
        if self.max_items < self.round_items:
            raise ValueError(
                f"decide.max_items ({self.max_items}) is below one round (decide.round_items = {self.round_items})"
            )
        if isinstance(self.max_seeds, bool) or not isinstance(self.max_seeds, int) or self.max_seeds < 0:
            raise ValueError(f"decide.max_seeds must be an integer >= 0, got {self.max_seeds!r}")
        check_min_seeds(self.min_seeds, self.max_seeds, "decide.min_seeds")
        self.mixtures = {str(k): check_mixture(k, v) for k, v in dict(self.mixtures).items()}
        if not isinstance(self.auto, bool):
            raise ValueError(f"decide.auto must be true or false, got {self.auto!r}")
