"""Verification of a model's iGSM output: parse the problem, recompute every needed value, and
check the generated solution step by step and its final answer (arithmetic modulo the prime)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .igsm import apply_op, parse_statements
from .scorers import Judge

_STEP = re.compile(r"(\w) = (\w) ([-+*]) (\w) , (\w): (\d+) , (\w): (\d+) , (\w): (\d+) \.")


@dataclass
class Verdict:
    answer_correct: bool
    parsed: bool
    steps_correct: int
    steps_expected: int
    predicted_answer: int | None

    @property
    def step_accuracy(self) -> float:
        return self.steps_correct / self.steps_expected if self.steps_expected else 1.0


def verify(prompt: str, output: str, modulus: int = 7) -> Verdict:
    """Parse a model's solution for ``prompt`` and check the answer and each step.

    A step is correct when its definition matches the problem's statement for that name, its
    operand values equal the true values, and its arithmetic is right.
    """
    truth, defs = parse_statements(prompt)
    qm = re.search(r"\? (\w)\s*$", prompt)
    if qm is None:
        raise ValueError("prompt must end with '? <name>'")
    query = qm.group(1)
    # True values of every needed quantity.
    changed = True
    while changed:
        changed = False
        for nm, (a, o, b) in defs.items():
            if nm not in truth and a in truth and b in truth:
                truth[nm] = apply_op(o, truth[a], truth[b], modulus)
                changed = True
    needed: set[str] = set()
    stack = [query]
    while stack:
        nm = stack.pop()
        if nm in defs and nm not in needed:
            needed.add(nm)
            stack.extend([defs[nm][0], defs[nm][2]])
    correct = 0
    seen = set()
    for m in _STEP.finditer(output):
        lhs, a, o, b, a2, va, b2, vb, lhs2, v = m.groups()
        ok = (
            lhs in needed
            and lhs not in seen
            and lhs == lhs2
            and (a2, b2) == (a, b)
            and defs.get(lhs) == (a, o, b)
            and int(va) == truth.get(a)
            and int(vb) == truth.get(b)
            and int(v) == truth.get(lhs)
        )
        seen.add(lhs)
        correct += int(ok)
    am = re.search(r"answer (\d+)", output)
    pred = int(am.group(1)) if am else None
    return Verdict(
        answer_correct=pred is not None and pred == truth.get(query),
        parsed=am is not None,
        steps_correct=correct,
        steps_expected=len(needed),
        predicted_answer=pred,
    )


def igsm_judge(modulus: int = 7) -> Judge:
    """The verifier's verdict on a generated solution's final answer, as a :data:`Judge`."""
    return lambda problem, text: verify(problem.prompt, text, modulus).answer_correct
