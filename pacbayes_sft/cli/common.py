"""What every command module of the CLI shares: argument types and reading example files."""

from __future__ import annotations

import argparse

from ..data.loaders import load_examples


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def read_examples(path: str, what: str) -> list[dict]:
    """The examples of a file given as ``--what``; ValueError naming the option otherwise."""
    try:
        return load_examples(path)
    except ValueError as exc:
        raise ValueError(f"--{what}: {exc}") from None
