"""Report tables a person can read: words left, numbers right; a setting shared by every race is
stated once, not on every row."""

import re

import pandas as pd

from pacbayes_sft.report.decisions import decision_counts, shown_decisions
from pacbayes_sft.report.pages import _html_table


def _aligned(page: str) -> list[list[bool]]:
    """Per row of the HTML table, whether each cell carries the left-aligning class."""
    return [[c == " class='t'" for c in re.findall(r"<t[dh]((?: class='t')?)>", tr)]
            for tr in re.findall(r"<tr[^>]*>.*?</tr>", page, flags=re.S)]  # fmt: skip


def test_words_are_left_aligned_and_numbers_formatted_or_not_right_aligned():
    table = pd.DataFrame({
        "base": ["strong", "weak"], "n": [128, 2048], "items": ["1,234", "inf"], "race": ["tie: easy, hard", "open: hard"],
        "seeds": ["4/4/4", "2/2/2"], "risk": [0.25, float("nan")], "share": ["12%", "–"], "note": ["", "pool used up"],
        "determined": [True, False],
    })  # fmt: skip
    rows = _aligned(_html_table(table))
    expected = [True, False, False, True, False, False, False, True, True]
    assert rows == [expected] * 3  # the header row and both body rows
    assert "items_<wbr>needed" in _html_table(table.rename(columns={"items": "items_needed"}))


def _decisions(eps: list[float], level: list[float]) -> pd.DataFrame:
    return pd.DataFrame({
        "base": ["b", "b"], "objective": ["sft", "sft"], "n": [8, 16], "mixture": ["test", "test"],
        "race": ["tie: easy, hard", "open: easy, hard"], "epsilon": eps, "level": level, "items": [96, 192],
        "over_seeds": ["", ""], "seeds": ["2", "2"], "seconds": [3, 4],
    })  # fmt: skip


def test_a_shared_epsilon_and_level_are_stated_once_and_differing_ones_stay_in_the_rows():
    same = _decisions([0.04, 0.04], [0.95, 0.95])
    assert "epsilon" not in shown_decisions(same) and "level" not in shown_decisions(same)
    assert decision_counts(same).endswith("1 of 2, every race at ε 0.04 and level 95%")
    mixed = _decisions([0.04, 0.02], [0.95, 0.95])
    assert list(shown_decisions(mixed).columns) == [c for c in mixed.columns if c != "level"]
    assert decision_counts(mixed).endswith("1 of 2, every race at level 95%")  # the level is not lost, ε stays per row
    assert "ε" not in decision_counts(mixed)
    assert not any("ε" in r for r in shown_decisions(mixed)["race"])  # the answer alone in its cell
