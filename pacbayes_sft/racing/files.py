"""A race's files under ``<run>/race/``: the summary ``<group>.json`` and the round files
``<group>/round_NNN.json``, how a started race is continued from them, and the finished races a
report reads. Loads no model code.

The summary holds the settings, the cells and their seeds, the fresh rounds' item seeds, the
retrained cells, the status, the answer (a :meth:`RaceResult.to_dict
<pacbayes_sft.stats.allocation.RaceResult.to_dict>`), the items used, the compute seconds and one
decision per round. A round file holds one round's seed-averaged losses per contender, written
before the race looks at it, so a rerun replays the finished rounds and goes on.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..stats.allocation import PairedRace, RaceResult, RoundDecision
from ..sweep.record import CellRecord
from ..sweep.store import atomic_write
from .groups import Group

RACE_DIR = "race"
SETTINGS = ("epsilon", "level", "round_items", "loss", "confidence", "items", "weights")  # a started race keeps these
OLD_SETTINGS = {"confidence": "bernstein", "items": "mixed", "weights": None}  # what a race file from before the setting used


def read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it is absent or cut off mid-write (not a finished file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def new_summary(group: Group, cells: dict[str, list[CellRecord]], settings: dict) -> dict:
    """The summary of a race not yet started: its group, settings and cells (bucket → cell ids)."""
    return {
        "group": dataclasses.asdict(group),
        "settings": settings,
        "cells": {b: [r.id for r in recs] for b, recs in cells.items()},
        "cell_seeds": [r.seed for r in next(iter(cells.values()))],
        "item_seeds": [],
        "retrained": {},
        "status": "running",
        "result": None,
        "seconds": 0.0,
        "rounds": [],
    }


def continue_summary(path: Path, doc: dict, settings: dict) -> dict:
    """The summary to continue: ``doc`` (new) if ``path`` holds none; the started one's retrained
    cells added if its settings and cells are these; ValueError naming what changed otherwise
    (changing them would void the race's guarantee)."""
    prev = read_json(path)
    if prev is None:
        return doc
    before = prev.get("settings", {})
    changed = [k for k in SETTINGS if before.get(k, OLD_SETTINGS.get(k)) != settings[k]]
    if changed or prev.get("cells") != doc["cells"]:
        what = ", ".join(f"{k} {before.get(k, OLD_SETTINGS.get(k))!r} -> {settings[k]!r}" for k in changed)
        raise ValueError(
            f"the race {str(path)!r} was started with other settings ({what or 'its cells changed'}); changing "
            f"them would void its guarantee: rerun with the same ones, or delete {path.name} and its folder to "
            "start again"
        )
    return doc | {"retrained": prev.get("retrained", {})}


def started_setting(path: Path, key: str, asked: str | None, default: str) -> str:
    """A race setting: ``asked``; or for None the started race's (its file's, the OLD_SETTINGS value
    in a file from before the setting existed), else ``default``, a new race's."""
    prev = read_json(path) if asked is None else None
    if isinstance(prev, dict):
        return prev.get("settings", {}).get(key, OLD_SETTINGS[key])
    return default if asked is None else asked


def _decision(d: RoundDecision, seconds: float, seed: int | None) -> dict:
    out = {"round": d.round, "n_items": d.n_items, "item_seed": seed, "eliminated": list(d.eliminated)}
    return out | {"contenders": list(d.contenders), "stop": d.stop, "seconds": round(seconds, 2)}


def record_round(race: PairedRace, doc: dict, data: dict) -> None:
    """Feed one round file's ``data`` to ``race`` and add its decision, seconds and item seed to ``doc``."""
    if data.get("round") != len(race.history_):
        raise ValueError(
            f"race round files are not contiguous: expected round {len(race.history_)}, got {data.get('round')!r}"
        )
    race.partial_fit({b: np.asarray(v, dtype=float) for b, v in data["losses"].items()})
    doc["rounds"].append(_decision(race.history_[-1], data["seconds"], data["item_seed"]))
    doc["seconds"] = round(doc["seconds"] + data["seconds"], 2)
    if data["item_seed"] is not None:
        doc["item_seeds"].append(data["item_seed"])


def write_summary(path: Path, race: PairedRace, doc: dict) -> dict:
    """Write ``doc`` to ``path`` (atomically), with the answer once the race is done; returns it."""
    if race.done_:
        res = race.result_
        doc |= {"status": "done", "result": res.to_dict(), "statement": res.statement()}
        doc |= {"n_items": res.n_items, "evaluations": res.evaluations}
    atomic_write(path, json.dumps(doc, indent=1))
    return doc


def race_mixture(doc: dict) -> str | None:
    """The mixture a race summary raced on: None for the sweep's own test mixture."""
    return doc.get("settings", {}).get("mixture")


def race_summaries(run_dir: str | Path, mixture: str | None = None) -> list[dict]:
    """The summaries of a run folder's finished races on ``mixture`` (None: the sweep's test
    mixture; ``"*"``: every mixture), each with its ``result`` as a
    :class:`~pacbayes_sft.stats.allocation.RaceResult`."""
    docs = []
    for f in sorted((Path(run_dir) / RACE_DIR).glob("*.json")):
        doc = read_json(f)
        if not isinstance(doc, dict) or (mixture != "*" and race_mixture(doc) != mixture):
            continue
        if doc.get("status") == "done" and isinstance(doc.get("result"), dict):
            docs.append(doc | {"result": RaceResult.from_dict(doc["result"])})
    return docs
