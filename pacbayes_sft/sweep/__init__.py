"""The (base × objective × n × bucket × seed) grid: config, tasks, cells and their records, the
run folder's store, the runner and the launcher.

The torch-free modules (config, cells, record, store, difficulty) are imported here; the runner,
the tasks and the launcher on first use of one of their names (PEP 562), so reading a config or a
run folder's records loads no model code.
"""

from __future__ import annotations

from ..lazy import lazy_exports
from .cells import Cell, cells_of, find_cell, parse_only, parse_shard, select_cells
from .config import Resources, SweepConfig, cell_hash, config_hash, load_config, normalise_config, resolve_base_path
from .record import SCHEMA_VERSION, TERM_KEYS, CellRecord, cell_terms

_LAZY = {
    "runner": (
        "ITEM_METRICS",
        "SweepContext",
        "base_record",
        "cell_summary",
        "certify_cell",
        "evaluate_test_items",
        "read_cell",
        "run_cell",
        "run_sweep",
        "sweep_context",
        "write_record",
    ),
    "tasks": ("DatasetTask", "IGSMTask", "Task", "make_task"),
    "launch": ("LAUNCHERS", "launch_sweep"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "ITEM_METRICS",
    "LAUNCHERS",
    "SCHEMA_VERSION",
    "TERM_KEYS",
    "Cell",
    "CellRecord",
    "DatasetTask",
    "IGSMTask",
    "Resources",
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
    "launch_sweep",
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
    "write_record",
]
