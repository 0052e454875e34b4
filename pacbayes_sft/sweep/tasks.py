"""Where a sweep's data come from: the task owns every example the sweep sees.

A task gives the runner four things, and the runner asks nothing else about the data:

- ``tokenizer_for_tiny_base()``: the tokenizer a randomly initialised base is built with;
- ``prepare(bases, out)``: the test set (and, for a dataset task, the binned training pool);
- ``train_examples(cell)``: the n training examples of a cell, nested across budgets (the first
  n of one stream per (bucket, seed));
- ``judge``: the one :data:`~pacbayes_sft.data.scorers.Judge`, ``(example, text) -> bool``;
- ``pool_examples(m)``: a labelled pool of ``m`` held-out examples per test slice, shared by every
  cell, that the reweighted label-free estimators weight to a target (never trained on).

Two tasks:

- ``igsm`` (:class:`IGSMTask`): problems generated in code (:mod:`pacbayes_sft.data.igsm`); the
  bin is the op count and the judge is the iGSM verifier.
- ``dataset`` (:class:`DatasetTask`): your (prompt, response, answer) files, binned by a
  difficulty measure (:mod:`pacbayes_sft.sweep.dataset`); the judge is a scorer compared with
  each example's answer.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from ..data.igsm import IGSMConfig, generate, test_set
from ..data.igsm_verify import igsm_judge
from ..data.scorers import Judge, answer_judge
from ..data.tokenizer import igsm_tokenizer
from ..training.models import load_causal_lm
from .cells import Cell, largest_budget
from .config import SweepConfig
from .dataset import cap_slices, draw_train, fresh_rows, load_split
from .difficulty import NEEDS_BASE
from .store import atomic_write

Bases = dict[str, tuple[Path, Any]]  # base name -> (checkpoint directory, tokenizer)


class Task(ABC):
    """The data of a sweep; see the module docstring. ``test_set`` is filled by :meth:`prepare`."""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg
        self.test_set: list = []

    @property
    def test_slices(self) -> dict[Any, list]:
        """The test set by slice (op count, or difficulty bin), in test-set order."""
        slices: dict[Any, list] = {}
        for ex in self.test_set:
            slices.setdefault(ex.op, []).append(ex)
        return slices

    def tokenizer_for_tiny_base(self, base: str) -> Any:
        raise ValueError(f"base {base!r}: a {self.cfg.task.kind} task needs a base checkpoint directory (path)")

    @abstractmethod
    def prepare(self, bases: Bases, out: Path) -> None:
        """Build the test set (and whatever else the task draws from) for these bases."""

    @abstractmethod
    def train_examples(self, cell: Cell) -> list:
        """The cell's n training examples (the first n of the (bucket, seed) stream)."""

    @property
    @abstractmethod
    def judge(self) -> Judge:
        """The task's :data:`~pacbayes_sft.data.scorers.Judge`."""

    def held_out_examples(self, cell: Cell, m: int) -> list:
        """``m`` examples of the cell's training distribution that it did not train on: the next m
        of its (bucket, seed) stream. ValueError when the task's streams are not nested."""
        longer = self.train_examples(dataclasses.replace(cell, n=cell.n + m))
        own = self.train_examples(cell)
        if [e.prompt for e in longer[: cell.n]] != [e.prompt for e in own]:
            raise ValueError(f"task {self.cfg.task.kind!r}: a longer draw does not extend the cell's own sample")
        return longer[cell.n :]

    @abstractmethod
    def pool_examples(self, m: int) -> list:
        """``m`` labelled examples of every test slice that no cell trains on, grouped by slice in
        ``test.ops`` order; the same for every cell. ValueError when a slice has none."""


POOL_SEED = 7_000_000
"""Seed offset of the iGSM pool's streams, far from the test set's (test.seed + op) and the races'."""


class IGSMTask(Task):
    """Generated iGSM problems: training templates for training, held-out templates for testing."""

    @property
    def _config(self) -> IGSMConfig:
        return IGSMConfig(modulus=self.cfg.task.modulus)

    def tokenizer_for_tiny_base(self, base: str) -> Any:
        return igsm_tokenizer(self.cfg.task.modulus)

    def prepare(self, bases: Bases, out: Path) -> None:
        t = self.cfg.test
        self.test_set = test_set(t.ops, t.n_per_op, seed=t.seed, config=self._config)

    def train_examples(self, cell: Cell) -> list:
        # The same (bucket, seed) draws nested samples across budgets: the first n of one stream.
        stream_seed = 1_000 * cell.seed + sorted(self.cfg.buckets).index(cell.bucket) + 7
        return generate(cell.n, self.cfg.buckets[cell.bucket], split="train", seed=stream_seed, config=self._config)

    def pool_examples(self, m: int) -> list:
        """Fresh problems from the training templates, ``m`` of each test op, from their own streams."""
        ops = self.cfg.test.ops
        return [p for op in ops for p in generate(m, [op], split="train", seed=POOL_SEED * 1000 + op, config=self._config)]

    @property
    def judge(self) -> Judge:
        return igsm_judge(self.cfg.task.modulus)


class DatasetTask(Task):
    """Your files: difficulty measured and binned by the first base's tokenizer (so every base
    sees the same buckets and slices); buckets too small for the budgets are refused."""

    def __init__(self, cfg: SweepConfig):
        super().__init__(cfg)
        self.pool: list = []
        self.test_pool: list = []  # every test-file row: the committed test set, then a race's fresh rows

    def prepare(self, bases: Bases, out: Path) -> None:
        cfg, (base_dir, tok) = self.cfg, next(iter(bases.values()))
        for b, (_, t) in bases.items():
            if t.pad_token_id is None:
                raise ValueError(f"base {b!r}: its tokenizer has no pad token; set one (e.g. the eos token) and save it")
        mc = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
        max_tokens = int(getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", 2048))
        kw: dict = {"max_new_tokens": cfg.eval.max_new_tokens}
        if cfg.task.difficulty in NEEDS_BASE:  # measured by the first base itself
            kw["model"] = load_causal_lm(base_dir)
        pool = load_split(cfg.task.train_path, cfg.task, tok, max_tokens, **kw)
        test = load_split(cfg.task.test_path, cfg.task, tok, max_tokens, edges=pool.edges, **kw)
        self.pool, self.test_pool = pool.examples, test.examples
        self.test_set = cap_slices(test.examples, cfg.test.ops, cfg.test.n_per_op, cfg.test.seed)
        self._write_summary(out, pool, test)
        self._check_buckets()

    def _write_summary(self, out: Path, pool, test) -> None:
        def per_bin(ex: list) -> dict[str, int]:
            return {str(b): sum(e.op == b for e in ex) for b in sorted({e.op for e in ex})}

        summary = {
            "edges": pool.edges,
            "dropped_too_long": {"train": pool.dropped_too_long, "test": test.dropped_too_long},
            "pool_per_bin": per_bin(self.pool),
            "test_per_bin": per_bin(self.test_set),
        }
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "dataset.json", json.dumps(summary, indent=1))

    def _check_buckets(self) -> None:
        need = largest_budget(self.cfg)
        for bucket, bins in self.cfg.buckets.items():
            have = sum(e.op in set(bins) for e in self.pool)
            if have < need:
                raise ValueError(
                    f"bucket {bucket!r} (bins {bins}) holds {have} training examples, fewer than the largest budget {need}"
                )

    def train_examples(self, cell: Cell) -> list:
        return draw_train(self.pool, self.cfg.buckets[cell.bucket], cell.n, cell.seed, cell.bucket)

    def held_out_examples(self, cell: Cell, m: int) -> list:
        """Up to ``m`` pool examples of the cell's bucket after its own n (fewer when the pool ends)."""
        bins = self.cfg.buckets[cell.bucket]
        available = sum(e.op in set(bins) for e in self.pool)
        rest = draw_train(self.pool, bins, available, cell.seed, cell.bucket)[cell.n : cell.n + m]
        if not rest:
            raise ValueError(f"bucket {cell.bucket!r} has no pool example left beyond the cell's n = {cell.n}")
        return rest

    def pool_examples(self, m: int) -> list:
        """Up to ``m`` training-file rows of each test bin that no cell of the grid trains on (a
        seeded shuffle within each bin); ValueError naming the bin when none is left."""
        need = largest_budget(self.cfg)  # the streams are nested: the largest budget covers every cell
        used = {e.prompt for bk, bins in self.cfg.buckets.items() for s in self.cfg.seeds
                for e in draw_train(self.pool, bins, need, s, bk)}  # fmt: skip
        rest = [e for e in self.pool if e.prompt not in used]
        for b in self.cfg.test.ops:
            if not any(e.op == b for e in rest):
                raise ValueError(f"label_free.pool: the training file has no row of difficulty bin {b} left "
                                 "after the cells' training samples (the reweighted estimators need every test bin)")  # fmt: skip
        return cap_slices(rest, self.cfg.test.ops, m, seed=POOL_SEED)

    def fresh_test_rows(self, round_: int, n_items: int) -> list:
        """Race round ``round_``'s rows of the test file beyond the committed test set
        (:func:`~pacbayes_sft.sweep.dataset.fresh_rows`; PoolUsedUp when a bin has too few left)."""
        t = self.cfg.test
        return fresh_rows(self.test_pool, t.ops, t.n_per_op, t.seed, round_, n_items)

    @property
    def judge(self) -> Judge:
        return answer_judge(self.cfg.task.scorer)


TASKS: dict[str, type[Task]] = {"igsm": IGSMTask, "dataset": DatasetTask}


def make_task(cfg: SweepConfig) -> Task:
    """The task of a sweep config (``task.kind``)."""
    return TASKS[cfg.task.kind](cfg)
