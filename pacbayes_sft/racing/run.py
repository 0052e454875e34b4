"""Race the buckets of one (base, objective, n) group of a sweep on fresh test items, until one
bucket is the best at the level, the contenders are within ε of the best (an ε-tie), or a cap.

- Round 0 is the sweep's own test set: each cell record's per-item losses under the config's
  loss, averaged over the seeds that every bucket of the group has (the bootstrap's items).
- Round r ≥ 1 draws ``round_items`` fresh test items from the config's test mixture, stratified by
  op like the test set (:mod:`~pacbayes_sft.racing.fresh_items`; races started before the
  ``items`` setting keep their ``mixed`` scheme): generated iGSM problems, or a dataset's unused
  test rows until a bin is used up (the race then stops open, and says so under
  ``pool_used_up``). With ``mixture``, every round (the first too) is fresh iGSM problems drawn
  i.i.d. from that mixture of ops. Every contender's adapters are evaluated on them (each seed's
  losses kept, their mean raced), with the sweep's evaluation settings
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
guarantee); raising ``max_items`` continues a race that stopped at the cap, which keeps it. The
race certifies its answer for the adapters that were trained; the answer over training seeds (an
estimate) is added under ``seeds`` by :mod:`~pacbayes_sft.racing.seed_stage` once the race is done.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..data.igsm import Problem
from ..defaults import RACE_EPSILON, RACE_LEVEL, RACE_MAX_ITEMS, RACE_ROUND_ITEMS
from ..stats.allocation import CONFIDENCES, PairedRace
from ..sweep.config import SweepConfig
from ..sweep.dataset import PoolUsedUp
from ..sweep.record import CellRecord
from ..sweep.runner import sweep_context
from ..sweep.store import atomic_write, folder_config
from .contenders import Contenders, check_adapters
from .files import RACE_DIR, continue_summary, new_summary, read_json, record_round, started_setting, write_summary
from .fresh_items import ITEM_SCHEMES, fresh_items, item_seed
from .groups import Group, group_cells, parse_group

log = logging.getLogger("pacbayes_sft.race")


def items_of_round(cfg: SweepConfig, settings: dict, rnd: int, task=None) -> tuple[int, list[Problem]] | tuple[None, None]:
    """(item seed, fresh items) of race round ``rnd``; (None, None) for round 0 of a race on the
    test mixture (the committed test set). A race on another mixture draws every round fresh,
    its round r from the items of fresh round r + 1. ``task``: the prepared task (a dataset's rows)."""
    weights = settings.get("weights")
    fresh = rnd if weights is None else rnd + 1
    if fresh == 0:
        return None, None
    weights = None if weights is None else {int(k): float(v) for k, v in weights.items()}
    return item_seed(cfg, fresh), fresh_items(cfg, fresh, settings["round_items"], settings["items"], weights, task)


def play_round(race: PairedRace, contenders: Contenders, cells: dict[str, list[CellRecord]], settings: dict) -> dict:
    """The next round's losses of every contender, per seed and seed-averaged, as its round file
    holds them (fresh problems by the race's item scheme and mixture)."""
    rnd, t0 = len(race.history_), time.perf_counter()
    seed, items = items_of_round(contenders.cfg, settings, rnd, contenders.ctx.task)
    if items is None:
        per_seed = contenders.round_zero(cells)
    else:
        per_seed = contenders.round({b: cells[b] for b in race.contenders_ or list(cells)}, items)
    return {
        "round": rnd,
        "item_seed": seed,
        "seconds": time.perf_counter() - t0,
        "losses": {b: [round(float(x), 6) for x in np.mean(list(v.values()), axis=0)] for b, v in per_seed.items()},
        "seed_losses": {b: {str(s): [round(float(x), 6) for x in a] for s, a in v.items()} for b, v in per_seed.items()},
    }


def _settings(path: Path, race: PairedRace, cfg: SweepConfig, mixture: str | None, weights: dict | None) -> dict:
    """What a race's summary records of its settings (a started race's item scheme kept)."""
    settings = {k: getattr(race, k) for k in ("epsilon", "level", "round_items", "max_items", "confidence")}
    scheme = started_setting(path, "items", None, ITEM_SCHEMES[0] if mixture is None else "sampled")
    settings |= {"loss": cfg.bound.loss, "items": scheme, "mixture": mixture}
    return settings | {"weights": None if weights is None else {str(k): float(v) for k, v in sorted(weights.items())}}


def contenders_for(out: Path, cfg: SweepConfig, progress: bool) -> Contenders:
    """The contenders of a race in ``out``, on the sweep's thread count (built when a round must run)."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    return Contenders(sweep_context(cfg, out), progress=progress)


def race_group(
    run_dir: str | Path,
    group: Group | str,
    *,
    epsilon: float = RACE_EPSILON,
    level: float = RACE_LEVEL,
    round_items: int = RACE_ROUND_ITEMS,
    max_items: int = RACE_MAX_ITEMS,
    confidence: str | None = None,
    mixture: tuple[str, dict[int, float]] | None = None,
    progress: bool = False,
) -> dict:
    """Race the buckets of ``group`` (a :class:`Group` or "base/objective/n") of the sweep in
    ``run_dir`` (see the module docstring); returns the summary written to ``<run>/race/<group>.json``, whose ``result`` is a
    :meth:`RaceResult.to_dict <pacbayes_sft.stats.allocation.RaceResult.to_dict>`.

    ``epsilon``: the ε of an ε-tie (loss units); ``level``: the probability the answer is right;
    ``round_items``: fresh items per round; ``max_items``: the cap on distinct items, round 0's
    included; ``confidence``: "cmeb", "betting" or "bernstein" (None: the started race's, else "cmeb");
    ``mixture``: (name, op → weight) to race on that mixture, every round fresh (``<group>@<name>.json``);
    ``progress``: progress bars while an adapter is trained. The answer over seeds is
    :func:`~pacbayes_sft.racing.seed_stage.seed_group`'s, run after the race."""
    out = Path(run_dir)
    if not out.is_dir():
        raise ValueError(f"run_dir {str(out)!r} is not a folder")
    cfg, state = folder_config(out)
    if cfg.task.kind != "igsm" and mixture is not None:
        raise ValueError(f"mixture: task kind {cfg.task.kind!r} has only its test file; only 'igsm' draws other mixtures")
    group = group if isinstance(group, Group) else parse_group(str(group))
    if mixture is not None and not (isinstance(mixture, tuple) and len(mixture) == 2 and isinstance(mixture[1], dict)):
        raise ValueError(f"mixture must be (name, {{op: weight}}) or None, got {mixture!r}")
    mixture, weights = mixture if mixture is not None else (None, None)
    rid = group.id if mixture is None else f"{group.id}@{mixture}"
    path, rounds_dir = out / RACE_DIR / f"{rid}.json", out / RACE_DIR / rid
    method = started_setting(path, "confidence", confidence, CONFIDENCES[0])
    race = PairedRace(epsilon, level, round_items, max_items, confidence=method)
    cells = group_cells(out, cfg, state, group)
    settings = _settings(path, race, cfg, mixture, weights)
    doc = continue_summary(path, new_summary(group, cells, settings), settings)
    prev_seeds = (read_json(path) or {}).get("seeds")  # the seed stage's answer, kept across a replay
    rounds_dir.mkdir(parents=True, exist_ok=True)
    for f in sorted(rounds_dir.glob("round_*.json")):  # replay what an earlier run finished
        if race.done_:
            break
        record_round(race, doc, json.loads(f.read_text()))
    if not race.done_:
        live = race.contenders_ or list(cells)
        check_adapters(out, cfg, [r for b in live for r in cells[b]])
    contenders = None  # built once, when a round must run
    while not race.done_:
        contenders = contenders or contenders_for(out, cfg, progress)
        try:
            data = play_round(race, contenders, cells, settings)
        except PoolUsedUp as e:  # a dataset's test file has no rows left: the race stops open here
            log.info(f"race {group}: {e}")
            doc["pool_used_up"] = str(e)
            race.end()
            break
        atomic_write(rounds_dir / f"round_{data['round']:03d}.json", json.dumps(data))  # before the race looks
        record_round(race, doc, data)
        doc["retrained"] |= contenders.retrained
        contenders.drop([r for b in race.history_[-1].eliminated for r in cells[b]])
        log.info(f"race {group}, round {data['round']}: {race.n_items_} items, left {', '.join(race.contenders_)}")
        write_summary(path, race, doc)
    keep = prev_seeds and contenders is None  # no new round: the seed stage's answer still holds
    return write_summary(path, race, doc | ({"seeds": prev_seeds} if keep else {}))
