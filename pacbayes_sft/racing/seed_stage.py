"""After a race: the group's answer over training seeds as well as test items (an estimate).

The race certifies an answer about the adapters that were trained (:mod:`~pacbayes_sft.racing.run`).
This stage asks the user's question, about each bucket over the randomness of training, with
:func:`~pacbayes_sft.stats.seeds.decide_over_seeds` on every seed's per-item losses over the race's
items (each bucket's rounds, as its round files hold them). The looks come at the seed counts
``min_seeds`` .. ``max_seeds`` (``min_seeds`` 0: one look, at ``max_seeds``). Before a look every
bucket still in contention is brought to that look's count: a cell of the next seed trained by the
sweep's own :func:`~pacbayes_sft.sweep.runner.train_cell` (its adapter under ``adapters/<cell id>``)
and evaluated on every item of the bucket's rounds, saved as ``<race folder>/seed_<cell id>.json``
before it is used, so an interrupted stage resumes. Buckets out of contention get no more seeds.
The result is stored in the race summary under ``seeds``, with ``certified: false``.

One look is the default because every look spends part of δ and a seed-level interval with few
seeds is wide (t on S − 1 degrees of freedom): replayed on the decide study's variance components,
a look at each of 2, 3, 4 seeds was expected to decide a fraction of the groups one look at 4 does
(THEORY §11).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ..stats.seeds import decide_over_seeds, look_schedule
from ..sweep.cells import Cell
from ..sweep.decide_config import check_min_seeds
from ..sweep.record import CellRecord
from ..sweep.runner import run_cell, train_cell
from ..sweep.store import atomic_write, folder_config
from .contenders import Contenders, retrainable
from .files import RACE_DIR, read_json
from .groups import Group, group_cells, parse_group
from .run import contenders_for, items_of_round

log = logging.getLogger("pacbayes_sft.race")


def round_files(rounds_dir: Path) -> list[dict]:
    """The race's round files, in round order."""
    return [json.loads(f.read_text()) for f in sorted(rounds_dir.glob("round_*.json"))]


def bucket_rows(rounds: list[dict], bucket: str) -> dict[int, list[np.ndarray]] | None:
    """seed → the bucket's per-round losses over the rounds it played; None when a round it played
    holds only seed-averaged losses (a race from before per-seed losses were recorded)."""
    rows: dict[int, list[np.ndarray]] = {}
    for rnd in rounds:
        if bucket not in rnd["losses"]:
            break  # eliminated: it plays no later round
        per_seed = rnd.get("seed_losses", {}).get(bucket)
        if per_seed is None:
            return None
        for s, v in per_seed.items():
            rows.setdefault(int(s), []).append(np.asarray(v, dtype=float))
    return rows


def extra_rows(rounds_dir: Path, bucket: str) -> dict[int, list[np.ndarray]]:
    """seed → per-round losses of the seeds this stage trained for ``bucket``."""
    out = {}
    for f in sorted(rounds_dir.glob("seed_*.json")):
        doc = read_json(f)
        if isinstance(doc, dict) and doc.get("bucket") == bucket:
            out[int(doc["seed"])] = [np.asarray(doc["rounds"][k], dtype=float) for k in sorted(doc["rounds"], key=int)]
    return out


def seed_matrix(rows: dict[int, list[np.ndarray]]) -> np.ndarray:
    """seeds × items (seed order), over the rounds every seed has."""
    k = min(len(v) for v in rows.values())
    return np.stack([np.concatenate(rows[s][:k]) for s in sorted(rows)])


def stored_schedule(doc: dict) -> list[int] | None:
    """The looks of the seed stage stored in race summary ``doc`` (None when none was made: no stage,
    or one skipped). A stage stored before ``min_seeds`` existed looked at every count from 2."""
    seeds = doc.get("seeds") or {}
    if seeds.get("status") != "done":
        return None
    if "look_seeds" in seeds:
        return list(seeds["look_seeds"])
    return look_schedule(len(doc["cell_seeds"]), int(seeds.get("max_seeds", 0)), 2)


def _next_cell(rec: CellRecord, seeds: list[int]) -> Cell:
    return Cell(rec.base, rec.objective, rec.n, rec.bucket, max(seeds) + 1)


def _train_and_score(contenders: Contenders, cell: Cell, items_of, n_rounds: int, path: Path, progress: bool) -> None:
    """Train ``cell`` (unless its adapter is saved), evaluate it on the bucket's ``n_rounds`` rounds
    (``items_of(r)``: None for the committed test set) and write its seed file."""
    t0 = time.perf_counter()
    if not (contenders.out / "adapters" / cell.id / "adapter_config.json").is_file():
        log.info(f"seeds: training {cell.id} (the next look needs its seed)")
        if retrainable(contenders.cfg):
            train_cell(contenders.ctx, cell, progress=progress)
        else:  # the adapter of a two-stage cell is its posterior mean: the whole cell makes it
            run_cell(contenders.ctx, cell, progress=progress)
    rounds = {}
    for r in range(n_rounds):
        items = items_of(r)
        losses = contenders.losses(cell, contenders.ctx) if items is None else contenders.losses_on(cell, items)
        rounds[str(r)] = [round(float(x), 6) for x in losses]
    contenders.drop([cell])
    doc = {"bucket": cell.bucket, "seed": cell.seed, "cell": cell.id, "rounds": rounds}
    atomic_write(path, json.dumps(doc | {"seconds": round(time.perf_counter() - t0, 2)}))


def _rows(rounds: list[dict], rounds_dir: Path, cells: dict[str, list[CellRecord]]) -> dict[str, dict] | None:
    """bucket → seed → per-round losses (the race's own seeds, then those this stage trained)."""
    rows = {}
    for b in cells:
        own = bucket_rows(rounds, b)
        if own is None:
            return None
        rows[b] = own | extra_rows(rounds_dir, b)
    return rows


def decide_seeds(
    cells: dict[str, list[CellRecord]],
    rounds_dir: Path,
    *,
    epsilon: float,
    level: float,
    max_seeds: int,
    min_seeds: int = 0,
    contenders_of=None,
    items_of=None,
    progress: bool = False,
) -> dict:
    """The answer over seeds (a :meth:`SeedDecision.to_dict` with ``status`` "done", or ``status``
    and ``why`` when it cannot be computed); while it is open, trains extra seeds through
    ``contenders_of()`` (a :class:`Contenders`; None: train none) and ``items_of(r)`` (round r's
    items, None for the committed test set). See the module docstring.

    Look j uses the first S₁ + j seeds of each bucket still in contention (S₁ = ``min_seeds``, or
    ``max_seeds`` when it is 0; never fewer than 2 or the race's own seeds S₀) and carries the
    exclusions of the looks before, so a rerun replays the same looks on the seeds already trained
    and trains only what the next look needs."""
    rounds = round_files(rounds_dir)
    s0 = len(next(iter(cells.values())))
    schedule = look_schedule(s0, max_seeds, min_seeds)
    if not schedule:
        return {"status": "skipped", "why": f"{max(max_seeds, s0) or 'one'} training seed(s) allowed per bucket (decide.max_seeds >= 2 decides over seeds)"}  # fmt: skip
    rows = _rows(rounds, rounds_dir, cells)
    if rows is None:
        return {"status": "skipped", "why": "the race's rounds hold seed-averaged losses only (started before per-seed losses were kept)"}  # fmt: skip
    looks, count, excluded = len(schedule), dict.fromkeys(cells, schedule[0]), ()
    for look in range(looks):
        short = [b for b in cells if len(rows[b]) < count[b] and b not in excluded]
        if short and contenders_of is None:  # the next look needs seeds this config cannot train
            if look == 0:
                return {"status": "skipped", "why": f"the first look needs {schedule[0]} seeds a bucket, more than the race has, and this config cannot train them"}  # fmt: skip
            break
        for b in short:  # the seeds this look needs and no earlier run trained
            for _ in range(count[b] - len(rows[b])):
                cell = _next_cell(cells[b][0], sorted(rows[b]))
                n_rounds = sum(1 for r in rounds if b in r["losses"])
                _train_and_score(contenders_of(), cell, items_of, n_rounds, rounds_dir / f"seed_{cell.id}.json", progress)
                rows[b] = _rows(rounds, rounds_dir, {b: cells[b]})[b]
        mats = {b: seed_matrix({s: rows[b][s] for s in sorted(rows[b])[: count[b]]}) for b in cells}
        decision = decide_over_seeds(mats, epsilon=epsilon, level=level, looks=looks, excluded=excluded)
        excluded = decision.excluded
        if decision.decided:
            break
        for b in decision.answer:  # one more seed for each bucket still in contention
            count[b] += 1
    extra = {b: sorted(set(extra_rows(rounds_dir, b))) for b in cells}
    spent = sum(float((read_json(f) or {}).get("seconds", 0.0)) for f in rounds_dir.glob("seed_*.json"))
    out = decision.to_dict() | {"status": "done", "extra_seeds": {b: v for b, v in extra.items() if v}, "looks": looks}
    return out | {"seconds": round(spent, 2), "look_seeds": schedule}


def wants_seed_stage(max_seeds: int, race_seeds: int) -> bool:
    """Whether a race is followed by a decision over seeds: more seeds may be trained
    (``max_seeds``), or the race already has several."""
    return bool(max_seeds) or race_seeds > 1


def seed_group(
    run_dir: str | Path,
    group: Group | str,
    *,
    mixture: str | None = None,
    max_seeds: int = 0,
    min_seeds: int = 0,
    progress: bool = False,
) -> dict:
    """The answer over seeds of ``group``'s finished race on ``mixture`` (None: the test mixture),
    training up to ``max_seeds`` seeds a bucket (0: the race's own seeds), with looks from
    ``min_seeds`` (0: one look, at ``max_seeds``); stored in the race summary under ``seeds`` (with
    both, which a rerun may not change: the looks split δ) and returned with it. ValueError when
    the race is not finished."""
    out = Path(run_dir)
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, int) or max_seeds < 0:
        raise ValueError(f"max_seeds must be an integer >= 0, got {max_seeds!r}")
    check_min_seeds(min_seeds, max_seeds, "min_seeds")
    cfg, state = folder_config(out)
    group = group if isinstance(group, Group) else parse_group(str(group))
    rid = group.id if mixture is None else f"{group.id}@{mixture}"
    path, rounds_dir = out / RACE_DIR / f"{rid}.json", out / RACE_DIR / rid
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("status") != "done":
        raise ValueError(f"the race {str(path)!r} is not finished: race the group first (pacbayes-sft race)")
    before, now = stored_schedule(doc), look_schedule(len(doc["cell_seeds"]), max_seeds, min_seeds)
    if before is not None and before != now:
        raise ValueError(f"the seed stage of {str(path)!r} looked at {before} seeds a bucket, not {now} (max_seeds "
                         f"{max_seeds}, min_seeds {min_seeds}): its looks split δ, so keep its settings (another "
                         "schedule on the same seeds would spend δ again)")  # fmt: skip
    cells = group_cells(out, cfg, state, group)
    group_seeds = sorted(r.seed for r in next(iter(cells.values())))
    if group_seeds != sorted(doc["cell_seeds"]):  # the stage pairs the race's own seeds' losses with new ones
        raise ValueError(f"the race {str(path)!r} was run on seeds {doc['cell_seeds']}, and the group now has seeds "
                         f"{group_seeds}: race the group again first (pacbayes-sft race)")  # fmt: skip
    made: list[Contenders] = []

    def contenders_of() -> Contenders:
        made[:] = made or [contenders_for(out, cfg, progress)]
        return made[0]

    items_of = lambda r: items_of_round(cfg, doc["settings"], r, contenders_of().ctx.task)[1]  # noqa: E731
    s = doc["settings"]
    doc["seeds"] = decide_seeds(cells, rounds_dir, epsilon=s["epsilon"], level=s["level"], max_seeds=max_seeds,
                                min_seeds=min_seeds, contenders_of=contenders_of, items_of=items_of,
                                progress=progress) | {"max_seeds": max_seeds, "min_seeds": min_seeds}  # fmt: skip
    atomic_write(path, json.dumps(doc, indent=1))
    return doc
