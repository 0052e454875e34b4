"""Racing a sweep's buckets: per (base, objective, n) group, spend fresh test items on the buckets
still in contention until one is the best at the stated level, the rest are within ε of it, or
a cap; the statistics are :mod:`pacbayes_sft.stats`' and the training the sweep's own.

:mod:`~pacbayes_sft.racing.groups` (which groups and cells race) and
:mod:`~pacbayes_sft.racing.files` (a race's files, the finished races a report reads) load no
model code and are imported here; :func:`race_group` (:mod:`~pacbayes_sft.racing.run`, which
evaluates and retrains adapters) on first use (PEP 562).
"""

from __future__ import annotations

from ..lazy import lazy_exports
from .files import race_summaries
from .groups import Group, group_cells, parse_group, race_groups

_LAZY = {"run": ("race_group",)}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = ["Group", "group_cells", "parse_group", "race_group", "race_groups", "race_summaries"]
