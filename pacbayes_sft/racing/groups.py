"""The groups of a sweep that race: one (base, objective, n) each, its buckets the contenders,
and the finished cell records each bucket brings (the seeds every bucket has)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sweep.cells import cells_of
from ..sweep.config import SweepConfig
from ..sweep.record import CellRecord
from ..sweep.store import FolderState, folder_config, valid_cells


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


def grid_groups(cfg: SweepConfig) -> list[Group]:
    """Every group of the config's grid, in grid order."""
    return list(dict.fromkeys(Group(c.base, c.objective, c.n) for c in cells_of(cfg)))


def group_cells(out: Path, cfg: SweepConfig, state: FolderState, group: Group) -> dict[str, list[CellRecord]]:
    """bucket → the group's finished cell records of the seeds every bucket has (seed order)."""
    grid = grid_groups(cfg)
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


def race_groups(run_dir: str | Path, *, complete: bool = False) -> list[Group]:
    """The groups of a run folder with a finished cell in every bucket for some seed (``complete``:
    for every seed of the config), grid order."""
    out = Path(run_dir)
    cfg, state = folder_config(out)
    done = {(r.base, r.objective, r.n, r.bucket, r.seed) for r in valid_cells(out, state) if not r.is_base}
    has = any if not complete else all
    return [
        g
        for g in grid_groups(cfg)
        if has(all((g.base, g.objective, g.n, b, s) in done for b in cfg.buckets) for s in cfg.seeds)
    ]
