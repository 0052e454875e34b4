"""Report figures that must not mislead: a vacuous bound's gap is labelled, not coloured."""

import pandas as pd

from pacbayes_sft.report.figures import FIGURES, term_maps


def _cells(vacuous: set) -> pd.DataFrame:
    rows = []
    for n in (32, 128):
        for bucket in ("easy", "hard"):
            for seed in (0, 1):
                upper = 0.999 if (n, bucket) in vacuous else 0.40
                g_gen = 1.0 - upper if (n, bucket) in vacuous else 0.25
                rows.append({"base": "b", "objective": "sft", "n": n, "bucket": bucket, "seed": seed,
                             "mc_risk_upper": upper, "g_gen": g_gen, "g_ext": 0.7, "kl": 100.0,
                             "total": upper + g_gen + 0.7, "test_risk": 0.5})
    return pd.DataFrame(rows)


def _texts(ax) -> dict[tuple[int, int], str]:
    """Cell (row, column) → the text drawn at its centre."""
    return {(int(t.get_position()[1]), int(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_the_g_gen_map_says_vacuous_where_the_bound_is_one_and_shows_numbers_elsewhere():
    ((name, fig),) = term_maps(_cells({(128, "hard")}), ["easy", "hard"])
    assert name == "terms_b_sft.png"
    g_gen_ax = fig.axes[0]
    assert "vacuous" in g_gen_ax.get_title()
    texts = _texts(g_gen_ax)
    assert texts[(1, 1)] == "vacuous"  # n = 128 (row 1), hard (column 1)
    assert [texts[k] for k in ((0, 0), (0, 1), (1, 0))] == ["0.25"] * 3
    # the other panels are untouched: the MC risk shows its number in the same cell
    (risk_ax,) = [ax for ax in fig.axes if ax.get_title() == "MC training risk (upper)"]
    assert _texts(risk_ax)[(1, 1)] == "1.00"


def test_a_map_where_every_bound_is_vacuous_has_no_colour_scale():
    ((_, fig),) = term_maps(_cells({(32, "easy"), (32, "hard"), (128, "easy"), (128, "hard")}), ["easy", "hard"])
    g_gen_ax = fig.axes[0]
    assert set(_texts(g_gen_ax).values()) == {"vacuous"}
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) - len(titled) == 5  # a colour bar for every panel but G_gen


def test_figure_families_are_unique():
    families = [spec.family for spec in FIGURES]
    assert len(families) == len(set(families)) and "terms" in families
