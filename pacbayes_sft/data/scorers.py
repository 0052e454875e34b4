"""Answer scorers: is a generated solution's final answer the reference answer?

A scorer is a function ``(generated_text, reference_answer) -> bool``. A :data:`Judge` is the
one type every evaluator takes: ``(example, generated_text) -> bool``; :func:`answer_judge` turns
a scorer into the judge that compares with each example's ``answer``, and a task's verifier (the
iGSM checker) is a judge of its own. The answer_error loss is ``1 - judge(...)`` (0/1 per
example). Three kinds of scorer:

- ``final_answer`` (default): extract the final answer from the text — the last ``\\boxed{…}``
  (nested braces allowed), else the last ``#### …`` line, else the last "the answer is …" /
  "answer …", else the last number — and compare it with the reference after normalisation:
  numerically when both sides parse as numbers (``1,234`` = ``1234``, ``0.50`` = ``1/2`` =
  ``\\frac{1}{2}``, ``-3`` = ``−3``), else as whitespace- and case-insensitive strings;
- ``exact_match``: the stripped text equals the stripped reference;
- ``module:function``: a user function with the same signature, found by import path.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from .loaders import example_field

Scorer = Callable[[str, str], bool]
"""``(generated_text, reference_answer) -> bool``."""

Judge = Callable[[Any, str], bool]
"""``(example, generated_text) -> bool``: is this generation a correct answer to this example?"""

_NUMBER = r"[-−]?\d[\d,]*(?:\.\d+)?|[-−]?\.\d+"
_FRAC = re.compile(r"\\d?frac\{([^{}]+)\}\{([^{}]+)\}")


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, i = 1, starts[-1]
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[starts[-1] : i - 1] if depth == 0 else None


def extract_final_answer(text: str) -> str | None:
    """The final answer in a generated solution, or None when there is none (see module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    boxed = _boxed(text)
    if boxed is not None:
        return boxed.strip()
    hashes = re.findall(r"####\s*([^\n]+)", text)
    if hashes:
        return hashes[-1].strip()
    said = re.findall(r"(?i)\banswer(?: is)?\s*[:=]?\s*(" + _NUMBER + r"|\S+)", text)
    if said:
        return said[-1].strip().rstrip(".")
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def parse_number(s: str) -> Fraction | None:
    """``s`` as an exact number (commas, ``$``, ``%``-free; ``a/b`` and ``\\frac{a}{b}``), or None."""
    t = s.strip().strip("$").replace("−", "-").replace(",", "").replace(" ", "").rstrip(".")
    t = _FRAC.sub(r"(\1)/(\2)", t).replace("(", "").replace(")", "")
    if t.startswith("-(") or not t:
        return None
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            return Fraction(num) / Fraction(den)
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Numeric equality when both parse as numbers, else normalised string equality."""
    if predicted is None:
        return False
    a, b = parse_number(predicted), parse_number(str(reference))
    if a is not None and b is not None:
        return a == b
    norm = lambda s: re.sub(r"\s+", " ", s.strip().rstrip(".")).lower()  # noqa: E731
    return norm(predicted) == norm(str(reference))


def final_answer(text: str, reference: str) -> bool:
    """Scorer: the extracted final answer equals the reference (see :func:`answers_match`)."""
    return answers_match(extract_final_answer(text), reference)


def exact_match(text: str, reference: str) -> bool:
    """Scorer: the whole stripped generation equals the stripped reference."""
    return text.strip() == str(reference).strip()


SCORERS: dict[str, Scorer] = {"final_answer": final_answer, "exact_match": exact_match}


def get_scorer(spec: str | Scorer) -> Scorer:
    """A scorer by name (``final_answer``, ``exact_match``), by import path ``module:function``,
    or a callable passed through."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"scorer must be a name, 'module:function' or a callable, got {spec!r}")
    if spec in SCORERS:
        return SCORERS[spec]
    if ":" not in spec:
        raise ValueError(f"scorer must be one of {sorted(SCORERS)} or 'module:function', got {spec!r}")
    mod, _, fn = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"scorer {spec!r} could not be imported: {e}") from None
    if not callable(obj):
        raise ValueError(f"scorer {spec!r} is not callable")
    return obj


def answer_judge(scorer: str | Scorer) -> Judge:
    """The :data:`Judge` that applies ``scorer`` (see :func:`get_scorer`) to the generated text
    and the example's ``answer`` field (a mapping key or an attribute)."""
    fn = get_scorer(scorer)
    return lambda ex, text: bool(fn(text, str(example_field(ex, "answer"))))
