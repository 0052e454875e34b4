"""The (base x objective x n x bucket x seed) grid: config, tasks, cell records, the store and the runner."""

from __future__ import annotations

from .config import SweepConfig, cell_hash, config_hash, load_config, normalise_config, resolve_base_path
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
    "SweepConfig",
    "SweepContext",
    "base_record",
    "base_rows",
    "cell_hash",
    "cell_summary",
    "cell_terms",
    "cells_of",
    "certify_cell",
    "config_hash",
    "evaluate_test_items",
    "evaluate_test_slices",
    "load_config",
    "normalise_config",
    "read_cell",
    "resolve_base_path",
    "run_cell",
    "run_sweep",
    "select_cells",
]
