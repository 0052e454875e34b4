"""Answer scorers on tricky strings: extraction, numeric normalisation, import paths."""

import pytest

from pacbayes_sft.data.scorers import answers_match, extract_final_answer, final_answer, get_scorer, parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"first \boxed{3} then \boxed{x^{2}+1}", "x^{2}+1"),
        ("Natalia sold 48 clips.\n#### 1,234", "1,234"),
        ("The answer is -7.", "-7"),
        ("A: 6 , Q: 3 . answer 3", "3"),
        ("we get 2.5 and then 0.75", "0.75"),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    "a, b, same",
    [
        (r"\frac{1}{2}", "0.5", True),
        ("1,234", "1234", True),
        ("-3", "−3", True),
        ("0.50", "1/2", True),
        ("$12", "12", True),
        ("2.5", "2.50", True),
        ("3", "4", False),
        ("-3", "3", False),
        ("Paris", " paris ", True),
        (None, "1", False),
    ],
)
def test_answers_match(a, b, same):
    assert answers_match(a, b) is same


def test_parse_number_and_scorers():
    assert parse_number(r"\dfrac{3}{4}") == parse_number("0.75")
    assert parse_number("1/0") is None and parse_number("abc") is None
    assert final_answer(r"... \boxed{\frac{1}{2}}", "0.5")
    assert not final_answer("I do not know", "0.5")  # a missing answer is wrong, not an error
    assert get_scorer("exact_match")(" 42 ", "42")
    assert get_scorer("pacbayes_sft.data.scorers:final_answer") is final_answer
    for bad, needle in [("nope", "one of"), ("math:nosuch", "could not be imported"), (3, "scorer must be")]:
        with pytest.raises(ValueError, match=needle):
            get_scorer(bad)
