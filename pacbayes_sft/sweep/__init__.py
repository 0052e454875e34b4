"""The (base × objective × n × bucket × seed) grid: config, tasks, cells and their records, the
run folder's store, and the runner."""

from __future__ import annotations

from .cells import Cell, cells_of, find_cell, parse_only, parse_shard, select_cells
from .config import SweepConfig, cell_hash, config_hash, load_config, normalise_config, resolve_base_path
from .record import SCHEMA_VERSION, TERM_KEYS, CellRecord, cell_terms
from .runner import (
    ITEM_METRICS,
    SweepContext,
    base_record,
    cell_summary,
    certify_cell,
    evaluate_test_items,
    read_cell,
    run_cell,
    run_sweep,
    sweep_context,
)
from .tasks import DatasetTask, IGSMTask, Task, make_task

__all__ = [
    "ITEM_METRICS",
    "SCHEMA_VERSION",
    "TERM_KEYS",
    "Cell",
    "CellRecord",
    "DatasetTask",
    "IGSMTask",
    "SweepConfig",
    "SweepContext",
    "Task",
    "base_record",
    "cell_hash",
    "cell_summary",
    "cell_terms",
    "cells_of",
    "certify_cell",
    "config_hash",
    "evaluate_test_items",
    "find_cell",
    "load_config",
    "make_task",
    "normalise_config",
    "parse_only",
    "parse_shard",
    "read_cell",
    "resolve_base_path",
    "run_cell",
    "run_sweep",
    "select_cells",
    "sweep_context",
]
