"""How a sweep decides each group's answer (``decide`` in a sweep config): after a group's cells are
done, its buckets race on fresh test items until one is the best at ``level``, every contender is
within ``epsilon`` of the best (an ε-tie), or ``max_items`` (the item cap) is reached. The race
itself is :mod:`pacbayes_sft.racing`; ``pacbayes-sft sweep --decide`` (or ``auto: true``) runs it.
None of it enters the cell hash: deciding reads finished cells, it never changes one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import defaults
from ..config import option


@dataclass
class DecideConfig:
    """The race every group of a sweep runs to a decision (see the module docstring)."""

    epsilon: float = option(defaults.RACE_EPSILON, "Tolerance of an epsilon-tie, in loss units (0 < epsilon < 1).")
    level: float = option(defaults.RACE_LEVEL, "Probability that each group's answer is right (0 < level < 1).")
    round_items: int = option(defaults.RACE_ROUND_ITEMS, "Fresh test items per round, stratified by test slice.")
    max_items: int = option(
        defaults.RACE_MAX_ITEMS, "Cap on a group's distinct test items, the sweep's own test set included."
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
        if not isinstance(self.auto, bool):
            raise ValueError(f"decide.auto must be true or false, got {self.auto!r}")
