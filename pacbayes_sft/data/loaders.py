"""Load users' (prompt, response[, difficulty]) data.

Formats: JSONL, CSV, Parquet (by file suffix), and Hugging Face ``datasets`` objects when that
package is installed. Column names are configurable; every record becomes a plain dict with
``prompt``, ``response`` and, when present, ``difficulty``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def _check_records(records: list[dict], source: str, difficulty: str | None) -> list[dict]:
    if not records:
        raise ValueError(f"{source} holds no examples")
    out = []
    for i, r in enumerate(records):
        for key in ("prompt", "response"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise ValueError(f"{source}: example {i} needs a non-empty string {key!r}")
        rec = {"prompt": r["prompt"], "response": r["response"]}
        if r.get("answer") is not None:  # the reference final answer (answer_error's scorer compares with it)
            rec["answer"] = str(r["answer"])
        if difficulty is not None and r.get("difficulty") is not None:
            d = r["difficulty"]
            try:
                d = float(d)
            except (TypeError, ValueError):
                raise ValueError(f"{source}: example {i} has a non-numeric difficulty {r['difficulty']!r}") from None
            if not math.isfinite(d):
                raise ValueError(f"{source}: example {i} has a non-finite difficulty")
            rec["difficulty"] = d
        out.append(rec)
    return out


def _rename(rows: Iterable[dict], prompt: str, response: str, difficulty: str | None) -> list[dict]:
    out = []
    for r in rows:
        rec = {"prompt": r.get(prompt), "response": r.get(response), "answer": r.get("answer")}
        if difficulty is not None and difficulty in r:
            rec["difficulty"] = r[difficulty]
        out.append(rec)
    return out


def load_examples(
    source: Any, *, prompt: str = "prompt", response: str = "response", difficulty: str | None = "difficulty"
) -> list[dict]:
    """Read examples from a .jsonl/.csv/.parquet path or a ``datasets.Dataset``.

    Args:
        source: a path or a Hugging Face dataset.
        prompt, response, difficulty: column names (difficulty optional; None to ignore).
    """
    if not isinstance(source, (str, Path)):
        try:
            import datasets
        except ImportError:  # pragma: no cover - optional dependency
            datasets = None
        if datasets is not None and isinstance(source, datasets.Dataset):
            return _check_records(_rename(source, prompt, response, difficulty), "dataset", difficulty)
        raise ValueError(
            f"source must be a .jsonl/.csv/.parquet path or a datasets.Dataset, got {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    rows = read_rows(path)
    if path.suffix.lower() in (".csv", ".parquet") and rows:
        for col in (prompt, response):
            if col not in rows[0]:
                raise ValueError(f"{path}: missing column {col!r} (columns: {list(rows[0])})")
    return _check_records(_rename(rows, prompt, response, difficulty), str(path), difficulty)


def read_rows(source: str | Path) -> list[dict]:
    """The rows of a .jsonl/.json, .csv or .parquet file, or of a folder saved by ``datasets``."""
    path = Path(source)
    if path.is_dir():
        try:
            import datasets
        except ImportError:  # pragma: no cover - optional dependency
            raise ValueError(f"{path} is a folder: reading a saved dataset needs the 'datasets' package") from None
        return list(datasets.load_from_disk(str(path)))
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        for ln, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {ln} is not valid JSON ({exc.msg})") from None
        return rows
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        return frame.to_dict(orient="records")
    raise ValueError(f"data file {str(path)!r} must end in .jsonl, .csv or .parquet (or be a saved datasets folder)")


def example_field(example: Any, name: str) -> Any:
    """``example[name]`` for a mapping, else ``example.name`` (a generated Problem, say)."""
    try:
        return example[name] if isinstance(example, Mapping) else getattr(example, name)
    except (KeyError, AttributeError):
        raise ValueError(f"example has no {name!r} field") from None
