"""What a sweep cell stores for the label-free estimates of its test risk, and the estimates.

At run time (:func:`collect_cell`), for the cell's reported model (the posterior mean) and its
posterior at the certified scale, with no test answer read:

- ``test``: per test item, the point model's final answer and confidence p(y | x), and the final
  answers of ``draws`` posterior draws (one own draw per item and draw);
- ``source``: the same on ``source`` held-out problems of the cell's training distribution, with
  each answer's 0/1 correctness (these are labelled: they play the source domain);
- ``pool``: the point model's answers and their 0/1 correctness on the task's labelled pool
  (``pool`` problems of every test slice, the same for every cell; :meth:`Task.pool_examples`),
  which the reweighted estimators weight to the test prompts.

Either part is collected only when its size (``label_free.source``, ``label_free.pool``) is > 0.

At report time (:func:`cell_estimates`) every registered estimator
(:data:`~pacbayes_sft.estimators.label_free.ESTIMATORS`) whose inputs are there is computed from
those columns, the seeds' answers (other cells of the same base, objective, n and bucket), the
cell's TV proxy and, for estimators that read prompts, the task's examples
(:func:`task_examples`), optionally on a subset of the test items (another test mixture).

Run time and :func:`~pacbayes_sft.certify.label_free.estimate_test_risk` share one collector,
:func:`~pacbayes_sft.certify.label_free.collect_label_free_inputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import defaults
from ..bounds.domain_adaptation import PosteriorDraws
from ..certify.label_free import collect_label_free_inputs
from ..certify.label_free_config import LabelFreeConfig
from ..estimators.answers import igsm_extractor
from ..estimators.label_free import ESTIMATORS, EstimatorSettings, LabelFreeInputs, label_free_estimates
from .cells import Cell
from .record import CellRecord

DRAW_SEED = 20_011
"""Offset of the label-free posterior draws' seed (apart from the bound's and the test risk's)."""

RECORDED = frozenset(
    {"target_answers", "target_conf", "target_answer_conf", "target_draws", "source_answers", "source_conf",
     "source_answer_conf", "source_correct", "source_draws"}
)  # fmt: skip
"""The inputs a cell record stores (the rest are rebuilt from the task, the seeds and the TV terms)."""

FROM_TASK = frozenset({"target_prompts", "source_prompts", "source_slices", "pool_prompts", "pool_slices"})
"""The inputs rebuilt from the task's examples at report time (see :func:`task_examples`)."""


def collect_cell(
    ctx: Any, cell: Cell, model: Any, tok: Any, sigma: Any, space: str, test_tokens: list | None = None
) -> dict[str, dict[str, list]]:
    """The ``label_free`` columns of a cell record (see the module docstring), gathered by the
    collector ``estimate_test_risk`` uses. ``test_tokens``: the point model's greedy token ids on
    the test set, when already computed. Every posterior draw is verified against the point
    model's generation (exact; decoded on only where it departs)."""
    cfg = ctx.cfg
    extract = igsm_extractor(cfg.task.modulus) if cfg.task.kind == "igsm" else None
    lf = LabelFreeConfig(sigma=sigma, space=space, draws=cfg.label_free.draws, seed=DRAW_SEED + cell.seed,
                         evaluation=cfg.eval)  # fmt: skip
    source = ctx.task.held_out_examples(cell, cfg.label_free.source) if cfg.label_free.source else None
    pool = ctx.task.pool_examples(cfg.label_free.pool) if cfg.label_free.pool else None
    fields = (RECORDED if source is not None else set()) | ({"pool_correct"} if pool is not None else set())
    got = collect_label_free_inputs(
        model, tok, ctx.task.test_set, fields=fields, source=source, pool=pool, judge=ctx.task.judge,
        extract=extract, config=lf, test_tokens=test_tokens,
    )  # fmt: skip
    cols: dict[str, dict[str, list]] = {}
    if source is not None:
        cols["test"] = {"answer": got.target_answers, "confidence": _rounded(got.target_conf),
                        "answer_confidence": _rounded(got.target_answer_conf)} | {
            f"answer_{j}": a for j, a in enumerate(got.target_draws.answers)
        }  # fmt: skip
        cols["source"] = (
            {"answer": got.source_answers, "confidence": _rounded(got.source_conf),
             "answer_confidence": _rounded(got.source_answer_conf), "correct": got.source_correct}
            | {f"answer_{j}": a for j, a in enumerate(got.source_draws.answers)}
            | {f"correct_{j}": c for j, c in enumerate(got.source_draws.correct)}
        )
    if pool is not None:
        cols["pool"] = {"correct": [int(c) for c in got.pool_correct]}
    return cols


def _rounded(values: Sequence[float]) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _draw_columns(cols: dict[str, list], prefix: str) -> list[list]:
    keys = sorted(
        (k for k in cols if k.startswith(prefix) and k[len(prefix) :].isdigit()), key=lambda k: int(k[len(prefix) :])
    )
    return [cols[k] for k in keys]


def task_examples(ctx: Any, cell: Cell) -> dict[str, list]:
    """The examples of ``cell``'s ``label_free`` columns, in the same order (the task draws them
    again, deterministically): ``source`` (when collected), ``test`` and ``pool`` (when collected)."""
    lf = ctx.cfg.label_free
    got = {"test": list(ctx.task.test_set)}
    if lf.source:
        got["source"] = ctx.task.held_out_examples(cell, lf.source)
    if lf.pool:
        got["pool"] = ctx.task.pool_examples(lf.pool)
    return got


def _check_examples(rec: CellRecord, examples: dict[str, list]) -> None:
    for part, key in (("source", "answer"), ("test", "answer"), ("pool", "correct")):
        if part in rec.label_free and part in examples and len(examples[part]) != len(rec.label_free[part][key]):
            raise ValueError(f"examples: cell {rec.id!r} recorded {len(rec.label_free[part][key])} {part} items, "
                             f"got {len(examples[part])}")  # fmt: skip


def cell_inputs(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
    *,
    examples: dict[str, list] | None = None,
) -> LabelFreeInputs:
    """The :class:`LabelFreeInputs` of a record with ``label_free`` columns, on the test items
    ``items`` (default all), with the answers of ``seed_records`` (the other seeds of its group,
    itself included), ``tv`` = (estimate, lower) (default the cell's own TV terms) and, given
    ``examples`` (:func:`task_examples`), the prompts and slices of the source, test and pool."""
    if not rec.label_free:
        raise ValueError(f"cell {rec.id!r} has no label_free columns (run the sweep with label_free.source or .pool > 0)")
    n_test = len(rec.items["slice"]) if "slice" in rec.items else len(rec.label_free["test"]["answer"])
    pick = list(range(n_test)) if items is None else list(items)

    def sel(values: Sequence) -> list:
        return [values[i] for i in pick]

    got: dict[str, Any] = {}
    if "source" in rec.label_free:
        got = _source_inputs(rec, seed_records, sel, tv)
    if "pool" in rec.label_free:
        got["pool_correct"] = rec.label_free["pool"]["correct"]
    if examples is not None:
        _check_examples(rec, examples)
        got["target_prompts"] = sel([e.prompt for e in examples["test"]])
        if "source" in examples:
            got |= {"source_prompts": [e.prompt for e in examples["source"]], "source_slices": [e.op for e in examples["source"]]}
        if "pool" in examples and "pool" in rec.label_free:
            got |= {"pool_prompts": [e.prompt for e in examples["pool"]], "pool_slices": [e.op for e in examples["pool"]]}
    return LabelFreeInputs(**got)


def _source_inputs(rec: CellRecord, seed_records: Sequence[CellRecord], sel: Any, tv: tuple | None) -> dict[str, Any]:
    """The inputs from a record's ``test`` and ``source`` columns (and its seeds' and TV terms)."""
    test, src = rec.label_free["test"], rec.label_free["source"]
    seeds = [sel(r.label_free["test"]["answer"]) for r in seed_records if "test" in r.label_free]
    tv = tv if tv is not None else (rec.terms["tv"], rec.terms["tv_lower"])
    return {
        "target_conf": sel(test["confidence"]),
        "target_answers": sel(test["answer"]),
        # records from before the answer confidence hold none: those estimators then do not run
        "target_answer_conf": sel(test["answer_confidence"]) if "answer_confidence" in test else None,
        "source_answer_conf": src.get("answer_confidence"),
        "source_conf": src["confidence"],
        "source_correct": src["correct"],
        "source_answers": src["answer"],
        "source_draws": PosteriorDraws(_draw_columns(src, "answer_"), _draw_columns(src, "correct_"), name="source"),
        "target_draws": PosteriorDraws([sel(a) for a in _draw_columns(test, "answer_")], name="target"),
        "seed_answers": seeds if len(seeds) >= 2 else None,
        "tv": tuple(float(x) for x in tv),
    }


def needs_examples() -> bool:
    """Whether a registered estimator reads an input rebuilt from the task (:data:`FROM_TASK`)."""
    return any(spec.needs & FROM_TASK for spec in ESTIMATORS.values())


def cell_estimates(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
    *,
    examples: dict[str, list] | None = None,
    delta: float = defaults.DELTA,
    n_boot: int = defaults.LABEL_FREE_N_BOOT,
) -> list[dict]:
    """One row per registered label-free estimator whose inputs the record (and ``examples``)
    give, on the cell's test items ``items``: name, estimate, lower, upper, certified, assumptions.
    The bootstrap is seeded by the cell's seed."""
    inputs = cell_inputs(rec, seed_records, items, tv, examples=examples)
    settings = EstimatorSettings(delta=delta, n_boot=n_boot, seed=int(rec.seed or 0))
    rows = label_free_estimates(inputs, settings)
    return [{k: v for k, v in r.to_dict().items() if k != "details"} for r in rows]


def measured_risk(rec: CellRecord, items: Sequence[int] | None = None) -> float:
    """The point model's measured answer error on the test items ``items`` (default all)."""
    correct = np.asarray(rec.items["answer_correct"], dtype=float)
    return float(1.0 - (correct if items is None else correct[list(items)]).mean())
