"""What a sweep cell stores for the label-free estimates of its test risk, and the estimates.

At run time (:func:`collect_cell`), for the cell's reported model (the posterior mean) and its
posterior at the certified scale, with no test answer read:

- ``test``: per test item, the point model's final answer and confidence p(y | x), and the final
  answers of ``draws`` posterior draws (one own draw per item and draw);
- ``source``: the same on ``source`` held-out problems of the cell's training distribution, with
  each answer's 0/1 correctness (these are labelled: they play the source domain).

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
    {"target_answers", "target_conf", "target_draws", "source_answers", "source_conf", "source_correct", "source_draws"}
)
"""The inputs a cell record stores (the rest are rebuilt from the task, the seeds and the TV terms)."""

FROM_TASK = frozenset({"target_prompts", "source_prompts", "source_slices"})
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
    source = ctx.task.held_out_examples(cell, cfg.label_free.source)
    got = collect_label_free_inputs(
        model, tok, ctx.task.test_set, fields=RECORDED, source=source, judge=ctx.task.judge, extract=extract,
        config=lf, test_tokens=test_tokens,
    )  # fmt: skip
    rnd = _rounded
    return {
        "test": {"answer": got.target_answers, "confidence": rnd(got.target_conf)}
        | {f"answer_{j}": a for j, a in enumerate(got.target_draws.answers)},
        "source": {"answer": got.source_answers, "confidence": rnd(got.source_conf), "correct": got.source_correct}
        | {f"answer_{j}": a for j, a in enumerate(got.source_draws.answers)}
        | {f"correct_{j}": c for j, c in enumerate(got.source_draws.correct)},
    }


def _rounded(values: Sequence[float]) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _draw_columns(cols: dict[str, list], prefix: str) -> list[list]:
    keys = sorted(
        (k for k in cols if k.startswith(prefix) and k[len(prefix) :].isdigit()), key=lambda k: int(k[len(prefix) :])
    )
    return [cols[k] for k in keys]


def task_examples(ctx: Any, cell: Cell) -> tuple[list, list]:
    """(held-out source examples, test examples) of ``cell``: the items its ``label_free`` columns
    were collected on, in the same order (the task draws them again, deterministically)."""
    return ctx.task.held_out_examples(cell, ctx.cfg.label_free.source), list(ctx.task.test_set)


def cell_inputs(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
    *,
    examples: tuple[Sequence[Any], Sequence[Any]] | None = None,
) -> LabelFreeInputs:
    """The :class:`LabelFreeInputs` of a record with ``label_free`` columns, on the test items
    ``items`` (default all), with the answers of ``seed_records`` (the other seeds of its group,
    itself included), ``tv`` = (estimate, lower) (default the cell's own TV terms) and, given
    ``examples`` = (source examples, test examples) (:func:`task_examples`), the prompts and the
    source slices."""
    if not rec.label_free:
        raise ValueError(f"cell {rec.id!r} has no label_free columns (run the sweep with label_free.source > 0)")
    test, src = rec.label_free["test"], rec.label_free["source"]
    pick = list(range(len(test["answer"]))) if items is None else list(items)

    def sel(values: Sequence) -> list:
        return [values[i] for i in pick]

    seeds = [sel(r.label_free["test"]["answer"]) for r in seed_records if r.label_free]
    tv = tv if tv is not None else (rec.terms["tv"], rec.terms["tv_lower"])
    prompts: dict[str, list] = {}
    if examples is not None:
        source, targets = examples
        if len(source) != len(src["answer"]) or len(targets) != len(test["answer"]):
            raise ValueError(f"examples: cell {rec.id!r} recorded {len(src['answer'])} source and "
                             f"{len(test['answer'])} test items, got {len(source)} and {len(targets)}")  # fmt: skip
        prompts = {"source_prompts": [e.prompt for e in source], "source_slices": [e.op for e in source],
                   "target_prompts": sel([e.prompt for e in targets])}  # fmt: skip
    return LabelFreeInputs(
        target_conf=sel(test["confidence"]),
        target_answers=sel(test["answer"]),
        source_conf=src["confidence"],
        source_correct=src["correct"],
        source_answers=src["answer"],
        source_draws=PosteriorDraws(_draw_columns(src, "answer_"), _draw_columns(src, "correct_"), name="source"),
        target_draws=PosteriorDraws([sel(a) for a in _draw_columns(test, "answer_")], name="target"),
        seed_answers=seeds if len(seeds) >= 2 else None,
        tv=tuple(float(x) for x in tv),
        **prompts,
    )


def needs_examples() -> bool:
    """Whether a registered estimator reads an input rebuilt from the task (:data:`FROM_TASK`)."""
    return any(spec.needs & FROM_TASK for spec in ESTIMATORS.values())


def cell_estimates(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
    *,
    examples: tuple[Sequence[Any], Sequence[Any]] | None = None,
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
