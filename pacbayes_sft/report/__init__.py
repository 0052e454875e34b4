"""Tidy results, uncertainty, forecast, item difficulty, figures and the report pages.

Layers, each importing only those below it:

- ``table``: the results table read from the cell records (the one place that reads them);
- ``uncertainty``: the paired bootstrap of the best bucket (no report imports);
- ``optimum``, ``forecast``, ``item_difficulty``: the best bucket per budget, its forecast from
  smaller budgets, and IRT item difficulty;
- ``plotting`` → ``figures`` (every figure, and the ``FIGURES`` list the report draws), ``pages``;
- ``build``: ``build_report``, which runs them all on a run folder.
"""

from __future__ import annotations

from .build import build_report
from .optimum import bootstrap_optimum, calibrated_predictions, optimum_table, summary
from .table import (
    KEYS,
    RISK_COLUMNS,
    base_losses,
    bucket_order,
    cell_items,
    cell_rows,
    cell_table,
    collect,
    collect_items,
    complete_budgets,
)

__all__ = [
    "KEYS",
    "RISK_COLUMNS",
    "base_losses",
    "bootstrap_optimum",
    "bucket_order",
    "build_report",
    "calibrated_predictions",
    "cell_items",
    "cell_rows",
    "cell_table",
    "collect",
    "collect_items",
    "complete_budgets",
    "optimum_table",
    "summary",
]
