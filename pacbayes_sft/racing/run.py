"""Race the buckets of one (base, objective, n) group of a sweep on fresh test items, until one
bucket is the best at the level, the contenders are within ε of the best (an ε-tie), or a cap.

- Round 0 is the sweep's own test set: each cell record's per-item losses under the config's
  loss, averaged over the seeds that every bucket of the group has (the bootstrap's items).
- Round r ≥ 1 draws ``round_items`` fresh iGSM test problems from the config's test mixture,
  stratified by op like the test set (:mod:`~pacbayes_sft.racing.fresh_items`; races started before
  the ``items`` setting keep their ``mixed`` scheme), and evaluates every contender's adapters on
  them (all seeds, averaged per item), with the sweep's evaluation settings
  (:class:`~pacbayes_sft.racing.contenders.Contenders`, which retrains a missing adapter with the
  sweep's own :func:`~pacbayes_sft.sweep.runner.train_cell`).
- :class:`~pacbayes_sft.stats.allocation.PairedRace` decides after each round, valid whenever the
  race stops, by ``confidence``: "cmeb" (conjugate-mixture confidence sequences; new races), "betting"
  or "bernstein" (races started with them).

Files under ``<run>/race/`` (:mod:`~pacbayes_sft.racing.files`): ``<group>.json``, the summary,
rewritten after every round, and ``<group>/round_NNN.json``, one round's losses, written before
the race looks at it. A rerun replays the rounds on disk and goes on, so an interrupted race loses
no finished round; a finished race is not recomputed. Changing ε, the level, the round size, the
confidence method, the item scheme or the cells of a started race is refused (it would void the
guarantee); raising ``max_items`` continues a race that stopped at the cap, which keeps it. Only
``kind: igsm`` tasks race.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..defaults import RACE_EPSILON, RACE_LEVEL, RACE_MAX_ITEMS, RACE_ROUND_ITEMS
from ..stats.allocation import CONFIDENCES, PairedRace
from ..sweep.config import SweepConfig
from ..sweep.record import CellRecord
from ..sweep.runner import sweep_context
from ..sweep.store import atomic_write, folder_config
from .contenders import Contenders, check_adapters
from .files import RACE_DIR, continue_summary, new_summary, record_round, started_setting, write_summary
from .fresh_items import ITEM_SCHEMES, fresh_items, item_seed
from .groups import Group, group_cells

log = logging.getLogger("pacbayes_sft.race")


def play_round(race: PairedRace, contenders: Contenders, cells: dict[str, list[CellRecord]], items: str) -> dict:
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


def _contenders(out: Path, cfg: SweepConfig, progress: bool) -> Contenders:
    """The contenders of a race in ``out``, on the sweep's thread count (built when a round must run)."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    return Contenders(sweep_context(cfg, out), progress=progress)


def race_group(
    run_dir: str | Path,
    base: str,
    objective: str,
    n: int,
    *,
    epsilon: float = RACE_EPSILON,
    level: float = RACE_LEVEL,
    round_items: int = RACE_ROUND_ITEMS,
    max_items: int = RACE_MAX_ITEMS,
    confidence: str | None = None,
    progress: bool = False,
) -> dict:
    """Race the buckets of group (base, objective, n) of the sweep in ``run_dir`` (see the module
    docstring); returns the summary written to ``<run>/race/<group>.json``, whose ``result`` is a
    :meth:`RaceResult.to_dict <pacbayes_sft.stats.allocation.RaceResult.to_dict>`.

    ``epsilon``: the ε of an ε-tie (loss units); ``level``: the probability the answer is right;
    ``round_items``: fresh items per round; ``max_items``: the cap on distinct items, round 0's
    included; ``confidence``: "cmeb", "betting" or "bernstein" (None: the started race's, else "cmeb");
    ``progress``: progress bars while a missing adapter is retrained."""
    out = Path(run_dir)
    if not out.is_dir():
        raise ValueError(f"run_dir {str(out)!r} is not a folder")
    cfg, state = folder_config(out)
    if cfg.task.kind != "igsm":
        raise ValueError(f"task kind {cfg.task.kind!r}: a race draws fresh test items, which only kind 'igsm' has")
    group = Group(str(base), str(objective), int(n))
    path, rounds_dir = out / RACE_DIR / f"{group.id}.json", out / RACE_DIR / group.id
    method = started_setting(path, "confidence", confidence, CONFIDENCES[0])
    race = PairedRace(epsilon, level, round_items, max_items, confidence=method)
    cells = group_cells(out, cfg, state, group)
    settings = {k: getattr(race, k) for k in ("epsilon", "level", "round_items", "max_items", "confidence")}
    settings |= {"loss": cfg.bound.loss, "items": started_setting(path, "items", None, ITEM_SCHEMES[0])}
    doc = continue_summary(path, new_summary(group, cells, settings), settings)
    rounds_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(rounds_dir.glob("round_*.json")):  # replay what an earlier run finished
        if race.done_:
            break
        record_round(race, doc, json.loads(f.read_text()))
    if not race.done_:
        live = race.contenders_ or list(cells)
        check_adapters(out, cfg, [r for b in live for r in cells[b]])
    contenders = None
    while not race.done_:
        contenders = contenders or _contenders(out, cfg, progress)
        data = play_round(race, contenders, cells, settings["items"])
        atomic_write(rounds_dir / f"round_{data['round']:03d}.json", json.dumps(data))  # before the race looks
        record_round(race, doc, data)
        doc["retrained"] |= contenders.retrained
        contenders.drop([r for b in race.history_[-1].eliminated for r in cells[b]])
        log.info(f"race {group}, round {data['round']}: {race.n_items_} items, left {', '.join(race.contenders_)}")
        write_summary(path, race, doc)
    return write_summary(path, race, doc)
