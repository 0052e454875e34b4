"""Race the buckets of one (base, objective, n) group of a sweep on fresh test items, until one
bucket is the best at the level, the contenders are within ε of the best (an ε-tie), or a cap.

- Round 0 is the sweep's own test set: each cell record's per-item losses under the config's
  loss, averaged over the seeds that every bucket of the group has (the bootstrap's items).
- Round r ≥ 1 draws ``round_items`` fresh iGSM test problems from the config's test mixture,
  stratified by op like the test set (:mod:`~pacbayes_sft.sweep.fresh_items`; races started before
  the ``items`` setting keep their ``mixed`` scheme), and evaluates every contender's adapters on
  them (all seeds, averaged per item), with the sweep's evaluation settings.
- :class:`~pacbayes_sft.sweep.allocation.PairedRace` decides after each round, valid whenever the race
  stops, by ``confidence``: "betting" (confidence sequences; new races) or "bernstein" (old files).

Files under ``<run>/race/``: ``<group>.json``, the summary (settings, cells and seeds, answer,
items used, compute seconds, one decision per round), rewritten after every round; and
``<group>/round_NNN.json``, one round's seed-averaged losses per contender, written before the
race looks at it. A rerun replays the rounds on disk and goes on, so an interrupted race loses no
finished round; a finished race is not recomputed. Changing ε, the level, the round size, the
confidence method, the item scheme or the cells of a started race is refused (it would void the guarantee); raising
``max_items`` continues a race that stopped at the cap, which keeps it.

A cell without an adapter folder is retrained from its seed as :func:`~pacbayes_sft.sweep.runner.run_cell`
trains it, under the data-free prior (under the data-dependent prior the race refuses and names the
cells). A retrained cell's round 0 is re-evaluated; ``retrained`` counts the items where it differs
from the record (greedy answers can differ on a few items between devices and batchings). Fresh
rounds run on a GPU when there is one. Only ``kind: igsm`` tasks race.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..certify.config import item_losses
from ..data.igsm import Problem
from .allocation import CONFIDENCES, PairedRace, RaceResult
from .cells import cells_of
from .config import SweepConfig
from .fresh_items import ITEM_SCHEMES, fresh_items, item_seed
from .record import CellRecord
from .store import FolderState, atomic_write, folder_config, valid_cells

log = logging.getLogger("pacbayes_sft.race")

RACE_DIR = "race"
SETTINGS = ("epsilon", "level", "round_items", "loss", "confidence", "items")  # a started race may not change these
OLD_SETTINGS = {"confidence": "bernstein", "items": "mixed"}  # what a race file from before the setting used


@dataclass(frozen=True)
class Group:
    """One (base, objective, n) of a sweep: the buckets that race each other."""

    base: str
    objective: str
    n: int

    @property
    def id(self) -> str:
        """The file name of its race (``strong__dft__n4096``)."""
        return f"{self.base}__{self.objective}__n{self.n}"

    def __str__(self) -> str:
        return f"{self.base}/{self.objective}/{self.n}"


def parse_group(text: str) -> Group:
    """``"strong/dft/4096"`` → Group; ValueError naming the expected form otherwise."""
    parts = str(text).split("/")
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        raise ValueError(f"group must look like BASE/OBJECTIVE/N (e.g. strong/dft/4096), got {text!r}")
    return Group(parts[0], parts[1], int(parts[2]))


def _grid_groups(cfg: SweepConfig) -> list[Group]:
    return list(dict.fromkeys(Group(c.base, c.objective, c.n) for c in cells_of(cfg)))


def group_cells(out: Path, cfg: SweepConfig, state: FolderState, group: Group) -> dict[str, list[CellRecord]]:
    """bucket → the group's finished cell records of the seeds every bucket has (seed order)."""
    grid = _grid_groups(cfg)
    if group not in grid:
        raise ValueError(f"group {group} is not in the sweep {str(out)!r}; its groups: {', '.join(map(str, grid))}")
    recs = [r for r in valid_cells(out, state) if (r.base, r.objective, r.n) == (group.base, group.objective, group.n)]
    by_bucket = {b: {r.seed: r for r in recs if r.bucket == b} for b in cfg.buckets}
    seeds = sorted(set.intersection(*(set(v) for v in by_bucket.values())))
    if not seeds:
        missing = [b for b, v in by_bucket.items() if not v]
        raise ValueError(
            f"group {group}: no seed has a finished cell in every bucket (none in {', '.join(missing)}); "
            "run `pacbayes-sft sweep` for it first"
        )
    return {b: [v[s] for s in seeds] for b, v in by_bucket.items()}


def race_groups(run_dir: str | Path) -> list[Group]:
    """The groups of a run folder with a finished cell in every bucket for some seed, grid order."""
    out = Path(run_dir)
    cfg, state = folder_config(out)
    done = {(r.base, r.objective, r.n, r.bucket, r.seed) for r in valid_cells(out, state) if not r.is_base}
    return [
        g
        for g in _grid_groups(cfg)
        if any(all((g.base, g.objective, g.n, b, s) in done for b in cfg.buckets) for s in cfg.seeds)
    ]


class _Contenders:
    """Loads (or retrains) a group's adapters once and evaluates them on a round's items."""

    def __init__(self, out: Path, cfg: SweepConfig, progress: bool):
        import torch

        # deferred: reading race results (the report) loads no model code; racing does
        from ..adapters import attach_adapter
        from ..certify.losses import example_losses
        from ..training.models import load_causal_lm
        from ..training.sft import finetune
        from . import runner

        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.runner, self.cfg, self.out, self.progress = runner, cfg, out, progress
        self.attach, self.load, self.finetune = attach_adapter, load_causal_lm, finetune
        self.example_losses = example_losses
        self.device = "cuda" if torch.cuda.is_available() else None
        self.ctx = runner.sweep_context(cfg, out)
        self.models: dict[str, object] = {}
        self.retrained: dict[str, int] = {}

    def _load(self, rec: CellRecord):
        if rec.id not in self.models:
            base_dir, _ = self.ctx.bases[rec.base]
            adapter = self.out / "adapters" / rec.id
            if (adapter / "adapter_config.json").is_file():
                model = self.attach(self.load(base_dir, device=self.device), adapter, base_name=rec.base)
            else:
                model = self._retrain(rec)
            self.models[rec.id] = model
        return self.models[rec.id]

    def _retrain(self, rec: CellRecord):
        """The cell's adapter trained again exactly as run_cell trains it (same examples, settings, seed)."""
        log.info(f"race: cell {rec.id} has no adapter under {self.out / 'adapters'}; retraining it from its seed")
        cell = next(c for c in cells_of(self.cfg) if c.id == rec.id)
        base_dir, tok = self.ctx.bases[cell.base]
        train = self.ctx.task.train_examples(cell)
        sft = dataclasses.replace(self.cfg.sft, objective=cell.objective, seed=cell.seed, progress=self.progress)
        res = self.finetune(
            self.load(base_dir),
            tok,
            [p.prompt for p in train],
            [p.response for p in train],
            sft,
            self.out / "adapters" / cell.id,
        )
        self.retrained[rec.id] = -1  # items that differ from the record: set by round_zero (-1: retrained later)
        return res.model

    def _losses(self, rec: CellRecord, ctx) -> np.ndarray:
        tok = self.ctx.bases[rec.base][1]
        cfg, shared = self.cfg, None
        if cfg.bound.loss == "answer_error" and cfg.eval.generate:  # generated in batches across slices, as cells do
            shared = self.example_losses(tok, ctx.task.test_set, "answer_error", judge=ctx.task.judge, evaluation=cfg.eval)
        _, items = self.runner.evaluate_test_items(ctx, self._load(rec), tok, rec.id, shared)
        return item_losses(cfg.bound.loss, items)

    def round_zero(self, cells: dict[str, list[CellRecord]]) -> dict[str, np.ndarray]:
        """Each bucket's seed-averaged losses on the committed test set: the records' own, or a
        re-evaluation for a retrained cell."""
        out = {}
        for bucket, recs in cells.items():
            rows = []
            for rec in recs:
                recorded = _record_losses(rec, self.cfg.bound.loss)
                if not (self.out / "adapters" / rec.id / "adapter_config.json").is_file() or rec.id in self.retrained:
                    fresh = self._losses(rec, self.ctx)
                    self.retrained[rec.id] = int((np.abs(fresh - recorded) > 1e-6).sum())
                    recorded = fresh
                rows.append(recorded)
            out[bucket] = np.mean(rows, axis=0)
        return out

    def round(self, cells: dict[str, list[CellRecord]], items: list[Problem]) -> dict[str, np.ndarray]:
        """Each contender's seed-averaged losses on ``items`` (the same items, in the same order)."""
        task = copy.copy(self.ctx.task)
        task.test_set = items
        ctx = dataclasses.replace(self.ctx, task=task)
        return {b: np.mean([self._losses(r, ctx) for r in recs], axis=0) for b, recs in cells.items()}

    def drop(self, recs: list[CellRecord]) -> None:
        """Free the models of eliminated buckets."""
        for r in recs:
            self.models.pop(r.id, None)


def _retrainable(cfg: SweepConfig) -> bool:
    """Whether a cell's adapter is the plain SFT adapter of its seed, which run_cell's first step
    retrains: true under the data-free prior (a config from before ``prior`` existed reads as one),
    false under the two-stage data-dependent prior, whose adapter is a certified posterior mean."""
    return getattr(getattr(cfg, "prior", None), "kind", "pretrained") == "pretrained"


def _check_adapters(out: Path, cfg: SweepConfig, recs: list[CellRecord]) -> None:
    missing = [r.id for r in recs if not (out / "adapters" / r.id / "adapter_config.json").is_file()]
    if missing and not _retrainable(cfg):
        raise ValueError(
            f"cells {', '.join(missing)} have no adapter under {str(out / 'adapters')!r}, and their config's prior "
            "is data-dependent (the adapter is the two-stage posterior, which only the sweep makes): delete those "
            "cells' records and run `pacbayes-sft sweep` again to race them"
        )


def _record_losses(rec: CellRecord, loss: str) -> np.ndarray:
    try:
        return item_losses(loss, rec.items)
    except KeyError:
        raise ValueError(f"cell {rec.id} has no per-item results for loss {loss!r} (answer_error needs eval.generate)") from None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # absent, or cut off mid-write: not a finished round
        return None


def _start(path: Path, doc: dict, settings: dict) -> dict:
    """The summary to continue: the one on disk if its settings and cells are these, else new."""
    prev = _read_json(path)
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


def _setting(path: Path, key: str, asked: str | None, default: str) -> str:
    """A race setting: ``asked``; or for None the started race's (its file's, the OLD_SETTINGS value
    in a file from before the setting existed), else ``default``, a new race's."""
    prev = _read_json(path) if asked is None else None
    if isinstance(prev, dict):
        return prev.get("settings", {}).get(key, OLD_SETTINGS[key])
    return default if asked is None else asked


def _decision(d, seconds: float, seed: int | None) -> dict:
    out = {"round": d.round, "n_items": d.n_items, "item_seed": seed, "eliminated": list(d.eliminated)}
    return out | {"contenders": list(d.contenders), "stop": d.stop, "seconds": round(seconds, 2)}


def _record_round(race: PairedRace, doc: dict, data: dict) -> None:
    if data.get("round") != len(race.history_):
        raise ValueError(
            f"race round files are not contiguous: expected round {len(race.history_)}, got {data.get('round')!r}"
        )
    race.partial_fit({b: np.asarray(v, dtype=float) for b, v in data["losses"].items()})
    doc["rounds"].append(_decision(race.history_[-1], data["seconds"], data["item_seed"]))
    doc["seconds"] = round(doc["seconds"] + data["seconds"], 2)
    if data["item_seed"] is not None:
        doc["item_seeds"].append(data["item_seed"])


def _finish(path: Path, race: PairedRace, doc: dict) -> dict:
    if race.done_:
        res = race.result_
        doc |= {"status": "done", "result": res.to_dict(), "statement": res.statement()}
        doc |= {"n_items": res.n_items, "evaluations": res.evaluations}
    atomic_write(path, json.dumps(doc, indent=1))
    return doc


def _new_doc(group: Group, cells: dict[str, list[CellRecord]], settings: dict) -> dict:
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


def _play_round(race: PairedRace, contenders: _Contenders, cells: dict[str, list[CellRecord]], items: str) -> dict:
    """The next round's seed-averaged losses of every contender (fresh problems by scheme ``items``),
    as its round file holds them."""
    rnd, t0 = len(race.history_), time.perf_counter()
    if rnd == 0:
        losses, seed = contenders.round_zero(cells), None
    else:
        seed = item_seed(contenders.cfg, rnd)
        live = {b: cells[b] for b in race.contenders_}
        losses = contenders.round(live, fresh_items(contenders.cfg, rnd, race.round_items, items))
    return {
        "round": rnd,
        "item_seed": seed,
        "seconds": time.perf_counter() - t0,
        "losses": {b: [round(float(x), 6) for x in v] for b, v in losses.items()},
    }


def race_group(
    run_dir: str | Path,
    base: str,
    objective: str,
    n: int,
    *,
    epsilon: float = 0.02,
    level: float = 0.95,
    round_items: int = 200,
    max_items: int = 4000,
    confidence: str | None = None,
    progress: bool = False,
) -> dict:
    """Race the buckets of group (base, objective, n) of the sweep in ``run_dir`` (see the module
    docstring); returns the summary written to ``<run>/race/<group>.json``, whose ``result`` is a
    :meth:`RaceResult.to_dict <pacbayes_sft.sweep.allocation.RaceResult.to_dict>`.

    ``epsilon``: the ε of an ε-tie (loss units); ``level``: the probability the answer is right;
    ``round_items``: fresh items per round; ``max_items``: the cap on distinct items, round 0's
    included; ``confidence``: "betting" or "bernstein" (None: the started race's, else "betting");
    ``progress``: progress bars while a missing adapter is retrained."""
    out = Path(run_dir)
    if not out.is_dir():
        raise ValueError(f"run_dir {str(out)!r} is not a folder")
    cfg, state = folder_config(out)
    if cfg.task.kind != "igsm":
        raise ValueError(f"task kind {cfg.task.kind!r}: a race draws fresh test items, which only kind 'igsm' has")
    group = Group(str(base), str(objective), int(n))
    path, rounds_dir = out / RACE_DIR / f"{group.id}.json", out / RACE_DIR / group.id
    race = PairedRace(epsilon, level, round_items, max_items, confidence=_setting(path, "confidence", confidence, CONFIDENCES[0]))
    cells = group_cells(out, cfg, state, group)
    settings = {k: getattr(race, k) for k in ("epsilon", "level", "round_items", "max_items", "confidence")}
    settings |= {"loss": cfg.bound.loss, "items": _setting(path, "items", None, ITEM_SCHEMES[0])}
    doc = _start(path, _new_doc(group, cells, settings), settings)
    rounds_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(rounds_dir.glob("round_*.json")):  # replay what an earlier run finished
        if race.done_:
            break
        _record_round(race, doc, json.loads(f.read_text()))
    if not race.done_:
        live = race.contenders_ or list(cells)
        _check_adapters(out, cfg, [r for b in live for r in cells[b]])
    contenders = None
    while not race.done_:
        contenders = contenders or _Contenders(out, cfg, progress)
        data = _play_round(race, contenders, cells, settings["items"])
        atomic_write(rounds_dir / f"round_{data['round']:03d}.json", json.dumps(data))  # before the race looks
        _record_round(race, doc, data)
        doc["retrained"] |= contenders.retrained
        contenders.drop([r for b in race.history_[-1].eliminated for r in cells[b]])
        log.info(f"race {group}, round {data['round']}: {race.n_items_} items, left {', '.join(race.contenders_)}")
        _finish(path, race, doc)
    return _finish(path, race, doc)


def race_summaries(run_dir: str | Path) -> list[dict]:
    """The summaries of a run folder's finished races (``<run>/race/*.json``), each with its
    ``result`` as a :class:`~pacbayes_sft.sweep.allocation.RaceResult`."""
    docs = []
    for f in sorted((Path(run_dir) / RACE_DIR).glob("*.json")):
        doc = _read_json(f)
        if isinstance(doc, dict) and doc.get("status") == "done" and isinstance(doc.get("result"), dict):
            docs.append(doc | {"result": RaceResult.from_dict(doc["result"])})
    return docs
