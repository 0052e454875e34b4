"""The report's figures, one function per family, and :data:`FIGURES`, the list the report
draws them from. Each function returns ``[(file name, figure)]`` (empty when the sweep has
nothing to show in it); its line in :data:`FIGURES` says which of the report's tables
(:class:`FigureInputs`) it reads.

Adding a figure: write its function here, add one ``FigureSpec`` line to :data:`FIGURES` (the
report draws the families in that order and embeds the files in it), and test the function; or,
from a package of your own, :func:`register_figure` appends it.
Shared drawing helpers (page width, heatmap, budget axis) are in :mod:`.plotting`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..bounds import is_vacuous
from .plotting import BUCKET_LABEL, MAX_WIDTH_IN, N_LABEL, budget_axis, heatmap, pyplot, size
from .table import RISK_COLUMNS


@dataclass(frozen=True)
class FigureInputs:
    """What a report figure may draw from; every risk is under the config's one loss."""

    df: pd.DataFrame  # the tidy results table (table.collect)
    cells: pd.DataFrame  # one row per cell of the complete budgets (table.cell_table) with `calibrated`
    optimum: pd.DataFrame  # optimum.optimum_table, bootstrap and held-out predictors' buckets merged in
    order: list[str]  # buckets, easy → hard
    loss: str
    irt_cross: pd.DataFrame | None = None  # item_difficulty.cross_difficulty at the largest full budgets

    @property
    def metric(self) -> str:
        """The results-table metric behind the loss."""
        return RISK_COLUMNS[self.loss]


TERM_PANELS = [
    ("g_gen", "G_gen (Seeger gap; grey: bound vacuous)", ".2f"),
    ("g_ext", "G_ext = TV proxy", ".2f"),
    ("kl", "KL (nats)", ".2g"),
    ("mc_risk_upper", "MC training risk (upper)", ".2f"),
    ("total", "two-gap total (estimate)", ".2f"),
    ("test_risk", "measured test risk", ".2f"),
]


def _cell_means(ct: pd.DataFrame) -> dict:
    return {
        key: g.groupby(["n", "bucket"]).mean(numeric_only=True).reset_index()
        for key, g in ct.groupby(["base", "objective"])
    }


def risk_pivot(ct: pd.DataFrame, order: list[str]) -> dict[tuple, tuple[pd.DataFrame, dict]]:
    """Per (base, objective): the seed-mean test risk over (n × bucket) and the bucket with the
    lowest risk per n — the same loss and rule as the report's observed optimum."""
    out = {}
    for key, mean in _cell_means(ct).items():
        piv = mean.pivot(index="n", columns="bucket", values="test_risk").reindex(columns=order)
        out[key] = (piv, {n: piv.loc[n].idxmin() for n in piv.index})
    return out


def score_maps(ct: pd.DataFrame, order: list[str], loss: str) -> list:
    """Per (base, objective): test risk under the sweep's loss over (n, bucket), the observed
    optimum (lowest risk) per n boxed."""
    plt, out = pyplot(), []
    for (base, obj), (piv, best) in risk_pivot(ct, order).items():
        fig, ax = plt.subplots(figsize=size(2.2 + 1.3 * len(order), 1.4 + 0.6 * len(piv)))
        title = f"test risk: {loss} ({base}, {obj}); lowest per n boxed"
        heatmap(ax, piv, title, mark=best, cmap="viridis_r", fmt=".3g", labels=(BUCKET_LABEL, N_LABEL))
        out.append((f"score_{base}_{obj}.png", fig))
    return out


def _vacuous_share(cells: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per (n, bucket): the share of seeds whose certified bound U_MC + G_gen is 1 (vacuous). Their
    G_gen is then 1 − U_MC, a small number that says nothing: the panel shows "vacuous" instead."""
    vac = is_vacuous(cells["mc_risk_upper"], cells["g_gen"]).astype(float)
    share = cells.assign(vacuous=vac).groupby(["n", "bucket"])["vacuous"].mean().reset_index()
    return share.pivot(index="n", columns="bucket", values="vacuous").reindex(columns=order)


def term_maps(ct: pd.DataFrame, order: list[str]) -> list:
    """Per (base, objective): every bound term over (n, bucket), in a 2 × 3 grid."""
    plt, out = pyplot(), []
    for (base, obj), mean in _cell_means(ct).items():
        fig, axes = plt.subplots(2, 3, figsize=size(MAX_WIDTH_IN, 2.2 + 1.0 * mean["n"].nunique()))
        vacuous = _vacuous_share(ct[(ct["base"] == base) & (ct["objective"] == obj)], order)
        for ax, (col, title, fmt) in zip(axes.ravel(), TERM_PANELS):
            piv = mean.pivot(index="n", columns="bucket", values=col).reindex(columns=order)
            hide = vacuous > 0 if col == "g_gen" else None
            heatmap(ax, piv, title, fmt=fmt, cmap="magma", labels=("bucket", "n"), hide=(hide, "vacuous"))
        out.append((f"terms_{base}_{obj}.png", fig))
    return out


def slice_maps(df: pd.DataFrame, order: list[str], score: str) -> list:
    """Per (base, objective), at the largest n: change per test op against the base, and the
    Kordi-style cross-difficulty map (training bucket × test op), in the metric behind the loss."""
    plt, out = pyplot(), []
    test_rows = df[(df["slice"] != "train") & (df["metric"] == score)]
    base_ref = test_rows[test_rows["objective"] == "base"].groupby(["base", "slice"])["value"].mean()
    for (base, obj), g in test_rows[test_rows["objective"] != "base"].groupby(["base", "objective"]):
        n_max = int(g["n"].max())
        gg = g[g["n"] == n_max].groupby(["bucket", "slice"])["value"].mean().reset_index()
        gg["test op"] = gg["slice"].astype(int)
        gg["change"] = gg["value"] - gg["slice"].map(lambda sl, b=base: base_ref.get((b, sl), np.nan))
        fig, axes = plt.subplots(1, 2, figsize=size(3 + 1.1 * gg["test op"].nunique() * 2, 1.8 + 0.6 * len(order)))
        for ax, col, title, cmap, center in (
            (axes[0], "change", f"change in {score} vs base (n={n_max})", "RdBu", 0.0),
            (axes[1], "value", f"{score}: training bucket × test op (n={n_max})", "viridis", None),
        ):
            piv = gg.pivot(index="bucket", columns="test op", values=col).reindex(index=order)
            xlabel = "test op (operations per problem)"
            heatmap(ax, piv, title, cmap=cmap, center=center, labels=(xlabel, BUCKET_LABEL))
        out.append((f"slices_{base}_{obj}.png", fig))
    return out


# the held-out predictors whose bucket (from held_out.csv) optimum_plot draws; the report merges
# these columns into the optimum table before drawing
HELD_OUT_MARKS = ("forecast", "learning_curve", "persistence")
# (column, marker, label, x offset factor): the predictors drawn beside the observed optimum
PREDICTOR_MARKS = [
    ("raw_idx", "s", "raw two-gap bound", 0.94),
    ("calibrated_idx", "^", "calibrated (leave-one-n-out)", 0.97),
    ("forecast_idx", "D", "forecast from smaller budgets", 1.03),
    ("learning_curve_idx", "v", "learning curve (test risk linear in log n)", 1.06),
    ("persistence_idx", "x", "persistence (best at the largest smaller budget)", 1.09),
]


def optimum_plot(opt: pd.DataFrame, order: list[str]) -> list:
    """The best bucket against n, one panel per (base, objective): the observed optimum with its
    uncertainty (grey: every bucket the bootstrap cannot tell from the best at 95%; bar: range of
    the per-seed bests) and each predictor's pick beside it."""
    plt = pyplot()
    rank = {b: i for i, b in enumerate(order)}
    opt = opt.copy()
    for col in HELD_OUT_MARKS:
        if col in opt:
            opt[f"{col}_idx"] = opt[col].map(rank)
    groups = list(opt.groupby(["base", "objective"]))
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=size(max(5.5 * cols, 8.5), 2.9 * rows + 0.9), sharey=True, squeeze=False
    )
    for ax, ((base, obj), g) in zip(axes.flat, groups):
        _optimum_panel(ax, g.sort_values("n"), rank, opt["n"].unique())
        ax.set_title(f"{base} / {obj}", fontsize=10)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(order)), order)
        ax.set_ylabel("best training bucket")
    legend = {}  # label -> handle, over every panel (a panel may lack a predictor)
    for ax in axes.flat[: len(groups)]:
        legend |= {lab: h for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in legend}
    fig.suptitle("best difficulty against the data budget: observed, with its uncertainty, and predicted")
    legend_h = 0.7 / fig.get_figheight()  # room for two rows of legend below the panels
    fig.legend(list(legend.values()), list(legend), fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.set_layout_engine("tight", rect=(0, legend_h, 1, 1))
    return [("optimum_vs_n.png", fig)]


def _optimum_panel(ax, g: pd.DataFrame, rank: dict, budgets) -> None:
    if "indistinguishable" in g:
        for n, tied in zip(g["n"], g["indistinguishable"]):
            ys = [rank[b.strip()] for b in str(tied).split(",") if b.strip() in rank]
            ax.scatter([n] * len(ys), ys, s=380, marker="s", color="0.85", zorder=1)
        ax.scatter([], [], s=120, marker="s", color="0.85", label="not distinguishable from the best at 95%")
    err = [g["observed_idx"] - g["seed_idx_min"], g["seed_idx_max"] - g["observed_idx"]]
    ax.errorbar(g["n"], g["observed_idx"], yerr=err, marker="o", color="k", lw=2, capsize=4, zorder=3)
    ax.lines[-1].set_label("observed (bar: range of the per-seed bests)")
    for col, marker, label, dx in PREDICTOR_MARKS:
        if col in g and g[col].notna().any():
            h = g[g[col].notna()]
            ax.plot(h["n"] * dx, h[col], marker, ms=7, mfc="none", mew=1.5, label=label, zorder=4)
    budget_axis(ax, budgets)
    ax.set_ylim(-0.6, len(rank) - 0.4)


def dft_maps(ct: pd.DataFrame, order: list[str], loss: str) -> list:
    """Per base, when both objectives ran: DFT minus SFT test risk over (n, bucket) (negative: DFT better)."""
    if not {"sft", "dft"} <= set(ct["objective"]):
        return []
    plt, out = pyplot(), []
    for base, g in ct.groupby("base"):
        if not {"sft", "dft"} <= set(g["objective"]):  # e.g. this base's DFT groups not finished yet
            continue
        m = g.groupby(["objective", "n", "bucket"])["test_risk"].mean()
        diff = (
            (m.loc["dft"] - m.loc["sft"])
            .dropna()  # budgets that only one objective ran
            .reset_index()
            .pivot(index="n", columns="bucket", values="test_risk")
            .reindex(columns=order)
        )
        if diff.empty:
            continue
        fig, ax = plt.subplots(figsize=size(2.2 + 1.3 * len(order), 1.4 + 0.6 * len(diff)))
        title = f"DFT minus SFT, test risk {loss} ({base})"
        heatmap(ax, diff, title, cmap="RdBu_r", center=0.0, labels=(BUCKET_LABEL, N_LABEL))
        out.append((f"dft_vs_sft_{base}.png", fig))
    return out


def irt_maps(cross: pd.DataFrame, order: list[str]) -> list:
    """Per (base, objective), at its largest budget: accuracy of each training bucket on the test
    items of each IRT difficulty bin (items rated by the sweep's own models)."""
    plt, out = pyplot(), []
    for (base, obj), g in cross.groupby(["base", "objective"]):
        n = int(g["n"].max())
        piv = g[g["n"] == n].pivot(index="bucket", columns="irt_bin", values="accuracy").reindex(index=order)
        fig, ax = plt.subplots(figsize=size(2.2 + 1.3 * piv.shape[1], 1.4 + 0.6 * len(piv)))
        title = f"answer accuracy by IRT difficulty bin of the test items ({base}, {obj}, n = {n})"
        heatmap(ax, piv, title, cmap="viridis", labels=("IRT difficulty bin (1 = easiest)", BUCKET_LABEL))
        out.append((f"irt_{base}_{obj}.png", fig))
    return out


def bases_plot(opt: pd.DataFrame, order: list[str]) -> list:
    """With two or more bases: the observed optimum of each against n. Series that agree would
    hide each other, so each is shifted by a small vertical offset; a hollow marker is a budget
    whose optimum is not determined at 95%."""
    if opt["base"].nunique() < 2:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = list(opt.groupby(["base", "objective"]))
    for k, ((base, obj), g) in enumerate(groups):
        g = g.sort_values("n")
        y = g["observed_idx"] + 0.07 * (k - (len(groups) - 1) / 2)
        (line,) = ax.plot(g["n"], y, "-", label=f"{base}/{obj}")
        det = g["determined"].astype(bool).to_numpy() if "determined" in g else np.ones(len(g), bool)
        ax.plot(g["n"][det], y[det], "o", color=line.get_color())
        ax.plot(g["n"][~det], y[~det], "o", mfc="white", color=line.get_color())
    budget_axis(ax, opt["n"].unique())
    ax.set_yticks(range(len(order)), order)
    ax.set_ylim(-0.5, len(order) - 0.5)
    ax.set_ylabel("observed best training bucket")
    ax.set_title("observed optimum per base model (hollow: not determined at 95%)")
    ax.legend(fontsize=8)
    return [("bases_optimum.png", fig)]


def bound_vs_risk_plot(ct: pd.DataFrame) -> list:
    """Each cell's two-gap total and certified training bound against the stochastic model's
    measured test risk E_π R_test (with its interval): the quantity the bound is about."""
    if "stoch_test_risk" not in ct:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    x = ct["stoch_test_risk"]
    err = [x - ct["stoch_test_lower"], ct["stoch_test_upper"] - x]
    ax.errorbar(x, ct["total"], xerr=err, fmt="o", capsize=3, label="two-gap total (estimate)")
    ax.errorbar(
        x,
        ct["mc_risk_upper"] + ct["g_gen"],
        xerr=err,
        fmt="s",
        capsize=3,
        alpha=0.7,
        label="U_MC + G_gen (certified, on the training distribution)",
    )
    ax.scatter(ct["test_risk"], ct["total"], marker="x", color="grey", label="total vs point-model test risk")
    lim = [0, max(1.0, float(ct["total"].max()) * 1.05)]
    ax.plot(lim, lim, "k:", lw=1, label="bound = risk")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(*lim)
    ax.set_xlabel("measured test risk of the stochastic model E_π R_test")
    ax.set_ylabel("bound")
    ax.set_title("bound against the risk it bounds (one point per cell)")
    ax.legend(fontsize=7, loc="lower right")
    return [("bound_vs_risk.png", fig)]


class FigureSpec(NamedTuple):
    """One figure family of the report: a name and how to draw it from the report's tables."""

    family: str
    draw: Callable[[FigureInputs], list]


# the report draws these in this order (one family at a time, each saved and closed before the next)
FIGURES: list[FigureSpec] = [
    FigureSpec("score", lambda f: score_maps(f.cells, f.order, f.loss)),
    FigureSpec("terms", lambda f: term_maps(f.cells, f.order)),
    FigureSpec("slices", lambda f: slice_maps(f.df, f.order, f.metric)),
    FigureSpec("optimum", lambda f: optimum_plot(f.optimum, f.order)),
    FigureSpec("bound_vs_risk", lambda f: bound_vs_risk_plot(f.cells)),
    FigureSpec("dft_vs_sft", lambda f: dft_maps(f.cells, f.order, f.loss)),
    FigureSpec("bases", lambda f: bases_plot(f.optimum, f.order)),
    FigureSpec("irt", lambda f: [] if f.irt_cross is None else irt_maps(f.irt_cross, f.order)),
]

_BUILT_IN = frozenset(spec.family for spec in FIGURES)


def register_figure(family: str, draw: Callable[[FigureInputs], list], *, replace: bool = False) -> FigureSpec:
    """Add a figure family to the end of :data:`FIGURES` (in its place, with ``replace``):
    ``draw(inputs)`` returns ``[(file name, figure)]`` from a :class:`FigureInputs`, or ``[]``.
    ``build_report`` then saves each PNG under ``report/`` and embeds it in ``report.md`` and
    ``report.html``. ValueError when ``family`` is taken (unless ``replace``; a built-in family
    is never replaced). Returns the :class:`FigureSpec`."""
    if not (isinstance(family, str) and family.isidentifier()):
        raise ValueError(f"family must be an identifier, got {family!r}")
    if not callable(draw):
        raise ValueError(f"draw must be a callable draw(inputs) -> [(file name, figure)], got {draw!r}")
    taken = [i for i, spec in enumerate(FIGURES) if spec.family == family]
    if family in _BUILT_IN or (taken and not replace):
        why = "a built-in figure family" if family in _BUILT_IN else "already registered (pass replace=True)"
        raise ValueError(f"family: {family!r} is {why}")
    spec = FigureSpec(family, draw)
    if taken:
        FIGURES[taken[0]] = spec
    else:
        FIGURES.append(spec)
    return spec


def unregister_figure(family: str) -> FigureSpec:
    """Remove and return the registered figure family ``family`` (ValueError for an unknown or built-in one)."""
    if family in _BUILT_IN:
        raise ValueError(f"family: the built-in figure family {family!r} cannot be removed")
    for i, spec in enumerate(FIGURES):
        if spec.family == family:
            return FIGURES.pop(i)
    known = ", ".join(spec.family for spec in FIGURES)
    raise ValueError(f"family: no figure family {family!r} is registered (known: {known})")
