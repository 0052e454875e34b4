"""The adapters of a group's buckets, loaded (or retrained) once and evaluated on a round's items.

A cell without an adapter folder is retrained from its seed by the sweep's own
:func:`~pacbayes_sft.sweep.runner.train_cell`, the function :func:`~pacbayes_sft.sweep.runner.run_cell`
trains it with, under the data-free prior (under the data-dependent prior the adapter is the
two-stage posterior mean, which only the sweep makes, so the race refuses and names the cells). A
retrained cell's round 0 is re-evaluated; ``retrained`` counts the items where it differs from the
record (greedy answers can differ on a few items between devices and batchings). Models run on a
GPU when there is one.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from ..adapters import attach_adapter
from ..certify.config import item_losses
from ..certify.losses import example_losses
from ..data.igsm import Problem
from ..sweep.cells import cells_of
from ..sweep.config import SweepConfig
from ..sweep.record import CellRecord
from ..sweep.runner import SweepContext, evaluate_test_items, train_cell
from ..training.models import load_causal_lm

log = logging.getLogger("pacbayes_sft.race")


def has_adapter(out: Path, rec: CellRecord) -> bool:
    """Whether the run folder ``out`` holds the saved adapter of cell ``rec``."""
    return (out / "adapters" / rec.id / "adapter_config.json").is_file()


def retrainable(cfg: SweepConfig) -> bool:
    """Whether a cell's adapter is the plain SFT adapter of its seed, which run_cell's first step
    retrains: true under the data-free prior (a config from before ``prior`` existed reads as one),
    false under the two-stage data-dependent prior, whose adapter is a certified posterior mean."""
    return getattr(getattr(cfg, "prior", None), "kind", "pretrained") == "pretrained"


def check_adapters(out: Path, cfg: SweepConfig, recs: list[CellRecord]) -> None:
    """ValueError naming the cells of ``recs`` without an adapter, unless they can be retrained."""
    missing = [r.id for r in recs if not has_adapter(out, r)]
    if missing and not retrainable(cfg):
        raise ValueError(
            f"cells {', '.join(missing)} have no adapter under {str(out / 'adapters')!r}, and their config's prior "
            "is data-dependent (the adapter is the two-stage posterior, which only the sweep makes): delete those "
            "cells' records and run `pacbayes-sft sweep` again to race them"
        )


def record_losses(rec: CellRecord, loss: str) -> np.ndarray:
    """The per-item losses under ``loss`` that cell ``rec`` recorded on the committed test set."""
    try:
        return item_losses(loss, rec.items)
    except KeyError:
        raise ValueError(
            f"cell {rec.id} has no per-item results for loss {loss!r} (answer_error needs eval.generate)"
        ) from None


class Contenders:
    """Loads (or retrains) a group's adapters once and evaluates them on a round's items, with the
    sweep's evaluation settings; ``ctx`` is the run folder's sweep context."""

    def __init__(self, ctx: SweepContext, *, progress: bool = False):
        self.ctx, self.cfg, self.out, self.progress = ctx, ctx.cfg, ctx.out, progress
        self.device = "cuda" if torch.cuda.is_available() else None
        self.models: dict[str, object] = {}
        self.retrained: dict[str, int] = {}  # cell id → items whose round-0 loss differs from the record

    def model(self, rec: CellRecord):
        """Cell ``rec``'s fine-tuned model: its saved adapter on its base, or retrained from its seed."""
        if rec.id not in self.models:
            if has_adapter(self.out, rec):
                base_dir, _ = self.ctx.bases[rec.base]
                adapter = self.out / "adapters" / rec.id
                model = attach_adapter(load_causal_lm(base_dir, device=self.device), adapter, base_name=rec.base)
            else:
                model = self._retrain(rec)
            self.models[rec.id] = model
        return self.models[rec.id]

    def _retrain(self, rec: CellRecord):
        """The cell's adapter trained again exactly as run_cell trains it (same examples, settings, seed)."""
        log.info(f"race: cell {rec.id} has no adapter under {self.out / 'adapters'}; retraining it from its seed")
        cell = next(c for c in cells_of(self.cfg) if c.id == rec.id)
        res = train_cell(self.ctx, cell, progress=self.progress)
        self.retrained[rec.id] = -1  # set by round_zero (-1: retrained after round 0)
        return res.model

    def losses(self, rec: CellRecord, ctx: SweepContext) -> np.ndarray:
        """Cell ``rec``'s per-item losses (the config's loss) on the test set of ``ctx``'s task."""
        tok = self.ctx.bases[rec.base][1]
        cfg, shared = self.cfg, None
        if cfg.bound.loss == "answer_error" and cfg.eval.generate:  # generated in batches across slices, as cells do
            shared = example_losses(tok, ctx.task.test_set, "answer_error", judge=ctx.task.judge, evaluation=cfg.eval)
        _, items = evaluate_test_items(ctx, self.model(rec), tok, rec.id, shared)
        return item_losses(cfg.bound.loss, items)

    def round_zero(self, cells: dict[str, list[CellRecord]]) -> dict[str, dict[int, np.ndarray]]:
        """Each bucket's per-seed losses on the committed test set: the records' own, or a
        re-evaluation for a retrained cell."""
        out: dict[str, dict[int, np.ndarray]] = {}
        for bucket, recs in cells.items():
            out[bucket] = {}
            for rec in recs:
                recorded = record_losses(rec, self.cfg.bound.loss)
                if not has_adapter(self.out, rec) or rec.id in self.retrained:
                    fresh = self.losses(rec, self.ctx)
                    self.retrained[rec.id] = int((np.abs(fresh - recorded) > 1e-6).sum())
                    recorded = fresh
                out[bucket][rec.seed] = recorded
        return out

    def losses_on(self, rec: CellRecord, items: list[Problem]) -> np.ndarray:
        """Cell ``rec``'s per-item losses on ``items`` in place of the test set (grouped by op, in
        order of first appearance, as the sweep's evaluation returns them)."""
        task = copy.copy(self.ctx.task)
        task.test_set = items
        return self.losses(rec, dataclasses.replace(self.ctx, task=task))

    def round(self, cells: dict[str, list[CellRecord]], items: list[Problem]) -> dict[str, dict[int, np.ndarray]]:
        """Each contender's per-seed losses on ``items`` (the same items, in the same order)."""
        return {b: {r.seed: self.losses_on(r, items) for r in recs} for b, recs in cells.items()}

    def drop(self, recs: list[CellRecord]) -> None:
        """Free the models of eliminated buckets."""
        for r in recs:
            self.models.pop(r.id, None)
