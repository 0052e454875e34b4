"""Drawing helpers shared by the report's figures (:mod:`.figures`): the page width, the axis
labels, an annotated heatmap and a budget axis. matplotlib and seaborn are imported on first use.

Every figure fits a 1280-px-wide page at the report's 110 dpi (≤ 11.5 in wide), names its axes
in words, and labels budgets by their values.
"""

from __future__ import annotations

import pandas as pd

MAX_WIDTH_IN = 11.5
N_LABEL = "n (training examples)"
BUCKET_LABEL = "training bucket (easy → hard)"


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def size(width: float, height: float) -> tuple[float, float]:
    """A figure size no wider than the page."""
    return min(width, MAX_WIDTH_IN), height


def heatmap(
    ax,
    piv: pd.DataFrame,
    title: str,
    *,
    fmt: str = ".2f",
    cmap: str = "viridis",
    mark=None,
    labels: tuple[str, str] = ("", ""),
    center: float | None = None,
    hide: tuple[pd.DataFrame, str] | None = None,
):
    """Annotated heatmap; ``mark`` maps a row label to the column label to box in red; ``labels``
    are the (x, y) axis labels. A map of differences passes ``center=0`` so that its diverging
    colours put zero at the neutral colour. ``hide = (mask, text)`` (booleans shaped like ``piv``)
    leaves those cells uncoloured and writes ``text`` in them instead of a number that would be
    misread (e.g. a vacuous bound's gap)."""
    import seaborn as sns
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FormatStrFormatter

    # a plain colour-bar format: no "1e-5 + 9.999e-1" offset text over the panel's title
    cbar = {"format": FormatStrFormatter("%.3g")}
    hide_frame, hide_text = hide if hide is not None else (None, "")
    mask = None if hide_frame is None else hide_frame.reindex_like(piv).fillna(False).astype(bool).to_numpy()
    every = mask is not None and mask.all()  # nothing to colour: no colour bar, no empty scale
    sns.heatmap(
        piv.fillna(0.0) if every else piv, annot=True, fmt=fmt, cmap=cmap, center=center, ax=ax, cbar=not every,
        annot_kws={"fontsize": 8}, cbar_kws=cbar if not every else None, mask=mask, vmin=0 if every else None,
        vmax=1 if every else None,
    )
    if mask is not None:
        ax.set_facecolor("#dddddd")
        for i, j in zip(*mask.nonzero()):
            ax.text(j + 0.5, i + 0.5, hide_text, ha="center", va="center", fontsize=7, color="#333333")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    for r, c in (mark or {}).items():
        i, j = list(piv.index).index(r), list(piv.columns).index(c)
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, lw=3, ec="red"))


def budget_axis(ax, budgets) -> None:
    """A log x axis ticked at the budgets themselves."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(sorted(budgets), [str(int(n)) for n in sorted(budgets)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(N_LABEL)
