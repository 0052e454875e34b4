"""The decide stage of a sweep: race every group of a run folder to a decision with the settings
of its config's ``decide`` section (:class:`~pacbayes_sft.sweep.decide_config.DecideConfig`).

Each group's answer is a race result (certified at the race's level, given i.i.d. fresh items;
:mod:`pacbayes_sft.stats.allocation`): a single best bucket, an ε-tie, or undecided at the item
cap. A group whose cells are not all finished is reported as missing, never raced on part of its
buckets. The races' files are those of ``pacbayes-sft race`` (``<run>/race/``), so a decide stage
cut short resumes where it stopped, and a report shows its answers beside the bootstrap's, which
is a separate, uncertified count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..stats.allocation import RaceResult
from ..sweep.decide_config import DecideConfig
from ..sweep.store import folder_config
from .groups import Group, grid_groups, race_groups
from .run import race_group


@dataclass(frozen=True)
class GroupDecision:
    """One group's decision: the race ``result`` (None when the group's cells are missing), its
    compute ``seconds`` and the seeds its items were averaged over."""

    group: Group
    result: RaceResult | None
    seconds: float = 0.0
    seeds: tuple[int, ...] = ()

    def line(self) -> str:
        """One console line: the answer and what it rests on."""
        if self.result is None:
            return f"{self.group}: not decided — a bucket has no finished cell for any seed (run the sweep first)"
        r = self.result
        return (f"{self.group}: {r.statement()} ({r.n_items} test items, seeds {', '.join(map(str, self.seeds))}, "
                f"race: certified at {r.level:.0%} on fresh items, {self.seconds:.0f} s)")  # fmt: skip


def decide_sweep(run_dir: str | Path, settings: DecideConfig | None = None, *, progress: bool = False) -> list[GroupDecision]:
    """Race every group of the sweep in ``run_dir`` with ``settings`` (default: the folder config's
    ``decide`` section); one :class:`GroupDecision` per group of the grid, in grid order.
    ValueError when the folder is not a sweep, or its task cannot draw fresh test items."""
    out = Path(run_dir)
    if not (out / "sweep.json").is_file():
        raise ValueError(f"run_dir {str(out)!r} is not a sweep's output folder (no sweep.json); run the sweep first")
    cfg, _ = folder_config(out)
    s = settings if settings is not None else cfg.decide
    if not isinstance(s, DecideConfig):
        raise ValueError(f"settings must be a DecideConfig, got {type(s).__name__}")
    if cfg.task.kind != "igsm":
        raise ValueError(f"decide: task kind {cfg.task.kind!r} cannot draw fresh test items (only 'igsm' races)")
    ready = set(race_groups(out))
    decisions = []
    for g in grid_groups(cfg):
        if g not in ready:
            decisions.append(GroupDecision(g, None))
            continue
        doc = race_group(out, g.base, g.objective, g.n, epsilon=s.epsilon, level=s.level, round_items=s.round_items,
                         max_items=s.max_items, progress=progress)  # fmt: skip
        decisions.append(GroupDecision(g, RaceResult.from_dict(doc["result"]), doc["seconds"], tuple(doc["cell_seeds"])))
    return decisions
