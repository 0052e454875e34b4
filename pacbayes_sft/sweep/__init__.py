"""The (base x objective x n x bucket x seed) grid: config, tasks, cell records, the store and the runner."""

from __future__ import annotations

from .runner import (
    CELL_FIELDS,
    ITEM_METRICS,
    Cell,
    SweepContext,
    base_record,
    base_rows,
    cell_summary,
    cell_terms,
    cells_of,
    certify_cell,
    evaluate_test_items,
    evaluate_test_slices,
    read_cell,
    run_cell,
    run_sweep,
    select_cells,
)

__all__ = [
    "CELL_FIELDS",
    "ITEM_METRICS",
    "Cell",
    "SweepContext",
    "base_record",
    "base_rows",
    "cell_summary",
    "cell_terms",
    "cells_of",
    "certify_cell",
    "evaluate_test_items",
    "evaluate_test_slices",
    "read_cell",
    "run_cell",
    "run_sweep",
    "select_cells",
]
