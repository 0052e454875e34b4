"""Tidy results → tables, plots and a self-contained report; predicted vs observed optimum.

``build_report(out_dir)`` merges every finished cell under ``out_dir/cells`` (from any number of
shards) into one tidy table (``results.parquet`` / ``results.csv``: one row per cell × seed ×
test slice × metric, :mod:`.table`), finds the observed and predicted best bucket per budget
(``summary.csv``, :mod:`.optimum`), scores the forecasts on held-out budgets (``predictors.csv``,
``held_out.csv``, :mod:`.forecast`), rates the test items by IRT (``items_irt.csv``,
:mod:`.item_difficulty`), then draws every figure of :data:`.figures.FIGURES` and writes
``report.md`` and ``report.html`` (:mod:`.pages`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..racing.files import race_summaries
from ..sweep.config import SweepConfig
from .figures import FIGURES, HELD_OUT_MARKS, FigureInputs
from .forecast import held_cases, held_out_predictions, score_predictors
from .item_difficulty import cross_difficulty, item_responses, largest_full_budget, rate_items
from .label_free import RACE_MIXTURE, estimates_table, label_free_picks, score_table
from .optimum import bootstrap_optimum, calibrated_predictions, optimum_table, summary, with_races
from .pages import summary_lines, write_html, write_markdown
from .plotting import pyplot
from .table import base_losses, bucket_order, cell_table, collect, collect_items, complete_budgets


def _optimum(out: Path, ct: pd.DataFrame, order: list[str], loss: str) -> pd.DataFrame:
    """The optimum table of the complete budgets, with the bootstrap of the observed best merged in."""
    opt = optimum_table(ct, order)
    keep = set(map(tuple, ct[["base", "objective", "n"]].drop_duplicates().to_numpy().tolist()))
    items = {k: v for k, v in collect_items(out).items() if (k[0], k[1], int(k[2])) in keep}
    boot = bootstrap_optimum(items, loss)
    if not boot.empty:
        opt = opt.merge(boot, on=["base", "objective", "n"], how="left")
    return with_races(opt, out)  # sequential races on fresh items, where `pacbayes-sft race` ran


def _predictor_scores(df, ct, opt, cfg, order) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecasts from smaller budgets and baselines, scored against the observed optimum."""
    held = held_out_predictions(ct, order, base_losses(df, cfg))
    if held.empty:
        return pd.DataFrame(), pd.DataFrame(columns=["base", "objective", "n", *HELD_OUT_MARKS])
    return score_predictors(held, opt), held_cases(held, opt)


def _irt_cross(out: Path, order: list[str]) -> pd.DataFrame | None:
    """Rate the test items by IRT over the sweep's own models (written to ``items_irt.csv``) and
    return each bucket's accuracy per IRT bin at the largest full budgets; None when there are no
    generated answers or too few models."""
    try:
        responses = item_responses(out)
    except ValueError:
        return None
    if responses["subject"].nunique() < 3:
        return None
    items = rate_items(responses)
    items.to_csv(out / "items_irt.csv", index=False)
    return largest_full_budget(cross_difficulty(responses, items), order)


def _save_figures(families: Iterable[list], folder: Path) -> list[str]:
    plt = pyplot()
    names = []
    for name, fig in (f for family in families for f in family):
        if fig.get_layout_engine() is None:  # a figure that set its own layout (e.g. a legend band) keeps it
            fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        names.append(name)
    for old in folder.glob("*.png"):  # figures of an earlier build that this one no longer draws
        if old.name not in names:
            old.unlink()
    return names


def _intro(cfg: SweepConfig, ct: pd.DataFrame, order: list[str], partial: list[str]) -> str:
    buckets = ", ".join(f"{b} = op {cfg.buckets[b]}" for b in order)
    intro = (
        f"{ct.shape[0]} fine-tuned cells; loss for risks and bounds: {cfg.bound.loss} (in [0, 1]); "
        f"buckets (easy → hard): {buckets}."
    )
    if partial:
        intro += f" Left out until every bucket has a finished cell: {', '.join(partial)}."
    return intro


def _label_free(out: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Every label-free estimator scored against the measured risk on the sweep's test set
    (``label_free_scores.csv``), and on each other mixture that races decided groups of (the
    skewed one, :data:`~pacbayes_sft.report.label_free.RACE_MIXTURE`), and each budget's
    label-free picks, when the cells collected their columns; (None, None) otherwise."""
    raced = [m for m, race in RACE_MIXTURE.items() if race is not None and race_summaries(out, mixture=race)]
    try:
        table = estimates_table(out, mixtures=("uniform", *raced))
    except ValueError:  # no cell collected label-free columns
        return None, None
    scores = score_table(out, table)
    scores.to_csv(out / "label_free_scores.csv", index=False)
    return scores, label_free_picks(table)


def build_report(out_dir: str | Path) -> dict:
    """Write results.{parquet,csv}, figures, summary.csv, report.md and report.html; return paths and summary."""
    out = Path(out_dir)
    df, cfg = collect(out)
    (out / "report").mkdir(exist_ok=True)
    df.to_csv(out / "results.csv", index=False)
    df.to_parquet(out / "results.parquet", index=False)
    order, loss = bucket_order(cfg), cfg.bound.loss
    ct, partial = complete_budgets(cell_table(df, loss), order)
    if ct.empty:
        raise ValueError("no (base, objective, n) has finished cells in every bucket yet")
    ct = ct.assign(calibrated=calibrated_predictions(ct))  # once; both tables below read it
    opt = _optimum(out, ct, order, loss)
    lf_scores, picks = _label_free(out)
    if picks is not None and not picks.empty:  # beside the bound's pick: what each label-free estimator would pick
        opt = opt.merge(picks, on=["base", "objective", "n"], how="left")
    summ = summary(ct, opt)
    opt.to_csv(out / "summary.csv", index=False)
    scores, cases = _predictor_scores(df, ct, opt, cfg, order)
    scores.to_csv(out / "predictors.csv", index=False)
    cases.to_csv(out / "held_out.csv", index=False)  # every predictor's bucket per held-out budget
    marked = opt.merge(cases[["base", "objective", "n", *HELD_OUT_MARKS]], how="left")
    inputs = FigureInputs(df, ct, marked, order, loss, irt_cross=_irt_cross(out, order))
    # one family at a time: each is saved and closed before the next is drawn
    plots = _save_figures((spec.draw(inputs) for spec in FIGURES), out / "report")
    title, intro, lines = f"Sweep report: {cfg.name}", _intro(cfg, ct, order, partial), summary_lines(summ, len(opt))
    extra = {"prior": cfg.prior.kind, "label_free": lf_scores}
    write_markdown(out / "report.md", title, intro, opt, lines, plots, scores, **extra)
    write_html(out / "report.html", title, intro, opt, lines, [out / "report" / p for p in plots], scores, **extra)
    return {
        "summary": summ,
        "optimum": opt,
        "predictors": scores,
        "cells": ct,
        "plots": [str(out / "report" / p) for p in plots],
        "report_md": str(out / "report.md"),
        "report_html": str(out / "report.html"),
        "table": str(out / "results.parquet"),
    }
