"""The cells of a sweep grid: their keys, their order, and the parts of the grid a run selects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import SweepConfig

CELL_FIELDS = ("base", "objective", "n", "bucket", "seed")


@dataclass(frozen=True)
class Cell:
    """One fine-tuning run of the grid."""

    base: str
    objective: str
    n: int
    bucket: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.base}__{self.objective}__n{self.n}__{self.bucket}__s{self.seed}"

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        """(base, objective, n, bucket, seed): the key of a cell in every table."""
        return (self.base, self.objective, self.n, self.bucket, self.seed)


def budgets_of(cfg: SweepConfig, objective: str) -> list[int]:
    """The budgets an objective runs at (``objective_budgets``, else every budget)."""
    return cfg.objective_budgets.get(objective, cfg.budgets)


def largest_budget(cfg: SweepConfig) -> int:
    """The largest n any cell of the grid trains on."""
    return max(n for o in cfg.objectives for n in budgets_of(cfg, o))


def cells_of(cfg: SweepConfig) -> list[Cell]:
    """Every cell of the grid in a fixed order (sharding relies on it): objective, then budget
    (small first), then base, bucket and seed — so a study cut short holds whole maps of its
    first objective at its smaller budgets."""
    return [
        Cell(b.name, o, n, bk, s)
        for o in cfg.objectives
        for n in budgets_of(cfg, o)
        for b in cfg.bases
        for bk in cfg.buckets
        for s in cfg.seeds
    ]


def find_cell(cfg: SweepConfig, cell_id: str, where: str) -> Cell:
    """The cell of the grid with this id; ValueError naming the run folder otherwise."""
    cells = cells_of(cfg)
    for c in cells:
        if c.id == cell_id:
            return c
    raise ValueError(f"cell {cell_id!r} is not in the sweep {where!r} (ids look like {cells[0].id})")


def select_cells(cells: list[Cell], only: Mapping[str, Iterable[object]] | None) -> list[Cell]:
    """The cells whose keys take one of the listed values, e.g. ``{"base": ["strong"],
    "objective": ["dft"], "n": [32, 128]}`` (values compared as text). A key or value that matches
    no cell of the grid is an error, so a typo cannot silently select nothing."""
    if not only:
        return cells
    chosen = cells
    for key, values in only.items():
        if key not in CELL_FIELDS:
            raise ValueError(f"only: unknown cell field {key!r}; expected one of {', '.join(CELL_FIELDS)}")
        wanted = {str(v) for v in values}
        present = {str(getattr(c, key)) for c in cells}
        if not wanted or not wanted <= present:
            missing = sorted(wanted - present) or ["(no values)"]
            raise ValueError(f"only: {key}={','.join(missing)} is not in the grid; it has {', '.join(sorted(present))}")
        chosen = [c for c in chosen if str(getattr(c, key)) in wanted]
    return chosen


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"i/N"`` or ``(i, N)`` with 0 ≤ i < N: this process runs the cells whose index ≡ i mod N."""
    if isinstance(shard, str):
        try:
            i, n_shards = (int(x) for x in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/N (e.g. 0/4), got {shard!r}") from None
    else:
        i, n_shards = shard
    if not (isinstance(i, int) and isinstance(n_shards, int) and n_shards >= 1 and 0 <= i < n_shards):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {shard!r}")
    return i, n_shards


def parse_only(items: Iterable[str] | None) -> dict[str, list[str]]:
    """``["objective=dft", "n=32,128"]`` → ``{"objective": ["dft"], "n": ["32", "128"]}``."""
    only: dict[str, list[str]] = {}
    for item in items or []:
        field, sep, values = item.partition("=")
        if not sep or not field or not values:
            raise ValueError(f"--only must look like FIELD=V1,V2 (e.g. objective=dft), got {item!r}")
        only.setdefault(field.strip(), []).extend(v.strip() for v in values.split(","))
    return only
