"""Tidy results, uncertainty, forecast, item difficulty, figures and the report pages."""

from __future__ import annotations

from .build import (
    ITEM_LOSSES,
    KEYS,
    RISK_COLUMNS,
    base_losses,
    bootstrap_optimum,
    bucket_order,
    build_report,
    calibrated_predictions,
    cell_table,
    collect,
    collect_items,
    complete_budgets,
    optimum_table,
    summary,
)

__all__ = [
    "ITEM_LOSSES",
    "KEYS",
    "RISK_COLUMNS",
    "base_losses",
    "bootstrap_optimum",
    "bucket_order",
    "build_report",
    "calibrated_predictions",
    "cell_table",
    "collect",
    "collect_items",
    "complete_budgets",
    "optimum_table",
    "summary",
]
