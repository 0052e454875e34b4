"""The (base × objective × n × bucket × seed) grid: config, tasks, cells and their records, the
run folder's store, the runner and the launcher.

This namespace holds the public API (load a config, list its cells, run or launch a sweep, read a
cell's record, recompute a cell's certificate); helpers are imported from their modules
(:mod:`~pacbayes_sft.sweep.runner`, :mod:`~pacbayes_sft.sweep.store`, …). The torch-free modules
(config, cells, record) are imported here; the runner, the tasks and the launcher on first use of
one of their names (PEP 562), so reading a config or a run folder's records loads no model code.
"""

from __future__ import annotations

from ..lazy import lazy_exports
from .cells import Cell, cells_of, find_cell, parse_only, select_cells
from .config import Resources, SweepConfig, load_config, normalise_config
from .record import CellRecord

_LAZY = {
    "runner": ("SweepContext", "certify_cell", "run_cell", "run_sweep", "sweep_context", "train_cell"),
    "tasks": ("DatasetTask", "IGSMTask", "Task", "make_task"),
    "launch": ("LAUNCHERS", "launch_sweep"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "LAUNCHERS",
    "Cell",
    "CellRecord",
    "DatasetTask",
    "IGSMTask",
    "Resources",
    "SweepConfig",
    "SweepContext",
    "Task",
    "cells_of",
    "certify_cell",
    "find_cell",
    "launch_sweep",
    "load_config",
    "make_task",
    "normalise_config",
    "parse_only",
    "run_cell",
    "run_sweep",
    "select_cells",
    "sweep_context",
    "train_cell",
]
