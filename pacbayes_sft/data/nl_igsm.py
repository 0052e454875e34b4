"""iGSM problems written out as ordinary math SFT records: a word problem, a step-by-step
solution and a final answer, in the format of public math SFT sets ("… The answer is 3.").

Used to ship a real-format dataset (``experiments/make_byo_example.py``) for the bring-your-own
path: nothing in it depends on the iGSM tokenizer or verifier.
"""

from __future__ import annotations

import re

from .igsm import IGSMConfig, generate

_OPS = {"+": "plus", "-": "minus", "*": "times"}


def _sentence(stmt: str) -> str:
    """``A = o + o`` → ``A equals o plus o``."""
    return re.sub(r" ([+\-*]) ", lambda m: f" {_OPS[m.group(1)]} ", stmt.strip()).replace(" = ", " equals ")


def render(problem) -> dict:
    """One record: prompt, step-by-step response ending in "The answer is N.", answer, op."""
    body, _, query = problem.prompt.rpartition("?")
    facts = [s for s in body.split(" . ") if s.strip()]
    lines = []
    for f in facts:
        f = f.strip().rstrip(" .")
        m = re.fullmatch(r"(\w+): (\d+)", f)
        lines.append(f"{m.group(1)} is {m.group(2)}." if m else f"{_sentence(f)}.")
    prompt = "Every quantity is a number modulo 7. " + " ".join(lines) + f" What is {query.strip()}?"
    steps = []
    for part in problem.response.split(" . "):
        part = part.strip().rstrip(" .")
        if part.startswith("answer"):
            continue
        head, *vals = [x.strip() for x in part.split(",")]
        last = vals[-1] if vals else ""
        steps.append(f"{_sentence(head)}, so {last.replace(':', ' =')}.")
    response = " ".join(steps) + f" The answer is {problem.answer}."
    return {"prompt": prompt, "response": response, "answer": str(problem.answer), "op": problem.op}


def records(n_per_op: int, ops: list[int], split: str, seed: int, modulus: int = 7) -> list[dict]:
    """``n_per_op`` rendered problems for each op count in ``ops``."""
    cfg = IGSMConfig(modulus=modulus)
    return [render(p) for op in ops for p in generate(n_per_op, op, split=split, seed=seed + op, config=cfg)]
