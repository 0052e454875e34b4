"""What a sweep cell stores for the label-free estimates of its test risk, and the estimates.

At run time (:func:`collect_cell`), for the cell's reported model (the posterior mean) and its
posterior at the certified scale, with no test answer read:

- ``test``: per test item, the point model's final answer and confidence p(y | x), and the final
  answers of ``draws`` posterior draws (one own draw per item and draw);
- ``source``: the same on ``source`` held-out problems of the cell's training distribution, with
  each answer's 0/1 correctness (these are labelled: they play the source domain).

At report time (:func:`cell_estimates`) every estimator of
:mod:`pacbayes_sft.estimators.label_free` is computed from those columns, the seeds' answers
(other cells of the same base, objective, n and bucket) and the cell's TV proxy, optionally on a
subset of the test items (another test mixture).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import defaults
from ..bounds.domain_adaptation import PosteriorDraws
from ..estimators.answers import collect_answers, collect_draws, igsm_extractor
from ..estimators.label_free import LabelFreeInputs, label_free_estimates
from ..estimators.posterior import GaussianPosterior
from .cells import Cell
from .record import CellRecord

DRAW_SEED = 20_011
"""Offset of the label-free posterior draws' seed (apart from the bound's and the test risk's)."""


def collect_cell(
    ctx: Any, cell: Cell, model: Any, tok: Any, sigma: Any, space: str, test_tokens: list | None = None
) -> dict[str, dict[str, list]]:
    """The ``label_free`` columns of a cell record (see the module docstring). ``test_tokens``: the
    point model's greedy token ids on the test set, when already computed. Every posterior draw is
    verified against the point model's generation (exact; decoded on only where it departs)."""
    cfg = ctx.cfg
    lf = cfg.label_free
    extract = igsm_extractor(cfg.task.modulus) if cfg.task.kind == "igsm" else None
    gen = {"extract": extract, "max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    test, source = ctx.task.test_set, ctx.task.held_out_examples(cell, lf.source)
    judge = ctx.task.judge
    point_t = collect_answers(model, tok, test, tokens=test_tokens, **gen)
    point_s = collect_answers(model, tok, source, judge=judge, **gen)
    post = GaussianPosterior(model, sigma, space, seed=DRAW_SEED + cell.seed)
    draws_s = collect_draws(
        post, tok, source, draws=lf.draws, judge=judge, reference=point_s.tokens, confidence=False, **gen
    )
    first = lf.draws * len(source)  # test draws after the source's: no sample is shared
    draws_t = collect_draws(
        post, tok, test, draws=lf.draws, first_draw=first, reference=point_t.tokens, confidence=False, **gen
    )
    rnd = _rounded
    return {
        "test": {"answer": point_t.answers, "confidence": rnd(point_t.confidences)}
        | {f"answer_{j}": d.answers for j, d in enumerate(draws_t)},
        "source": {"answer": point_s.answers, "confidence": rnd(point_s.confidences), "correct": point_s.correct}
        | {f"answer_{j}": d.answers for j, d in enumerate(draws_s)}
        | {f"correct_{j}": d.correct for j, d in enumerate(draws_s)},
    }


def _rounded(values: Sequence[float]) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _draw_columns(cols: dict[str, list], prefix: str) -> list[list]:
    keys = sorted(
        (k for k in cols if k.startswith(prefix) and k[len(prefix) :].isdigit()), key=lambda k: int(k[len(prefix) :])
    )
    return [cols[k] for k in keys]


def cell_inputs(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
) -> LabelFreeInputs:
    """The :class:`LabelFreeInputs` of a record with ``label_free`` columns, on the test items
    ``items`` (default all), with the answers of ``seed_records`` (the other seeds of its group,
    itself included) and ``tv`` = (estimate, lower) (default the cell's own TV terms)."""
    if not rec.label_free:
        raise ValueError(f"cell {rec.id!r} has no label_free columns (run the sweep with label_free.source > 0)")
    test, src = rec.label_free["test"], rec.label_free["source"]
    pick = list(range(len(test["answer"]))) if items is None else list(items)

    def sel(values: list) -> list:
        return [values[i] for i in pick]

    seeds = [sel(r.label_free["test"]["answer"]) for r in seed_records if r.label_free]
    tv = tv if tv is not None else (rec.terms["tv"], rec.terms["tv_lower"])
    return LabelFreeInputs(
        target_conf=sel(test["confidence"]),
        source_conf=src["confidence"],
        source_correct=src["correct"],
        source_draws=PosteriorDraws(_draw_columns(src, "answer_"), _draw_columns(src, "correct_"), name="source"),
        target_draws=PosteriorDraws([sel(a) for a in _draw_columns(test, "answer_")], name="target"),
        seed_answers=seeds if len(seeds) >= 2 else None,
        tv=tuple(float(x) for x in tv),
    )


def cell_estimates(
    rec: CellRecord,
    seed_records: Sequence[CellRecord] = (),
    items: Sequence[int] | None = None,
    tv: tuple | None = None,
    *,
    delta: float = defaults.DELTA,
    n_boot: int = 500,
) -> list[dict]:
    """One row per label-free estimator of the cell's test risk (on ``items``): name, estimate,
    lower, upper, certified, assumptions."""
    inputs = cell_inputs(rec, seed_records, items, tv)
    rows = label_free_estimates(inputs, delta=delta, n_boot=n_boot, random_state=int(rec.seed or 0))
    return [{k: v for k, v in r.to_dict().items() if k != "details"} for r in rows]


def measured_risk(rec: CellRecord, items: Sequence[int] | None = None) -> float:
    """The point model's measured answer error on the test items ``items`` (default all)."""
    correct = np.asarray(rec.items["answer_correct"], dtype=float)
    return float(1.0 - (correct if items is None else correct[list(items)]).mean())
