"""The decide stage of a sweep: race every group of a run folder to a decision with the settings
of its config's ``decide`` section (:class:`~pacbayes_sft.sweep.decide_config.DecideConfig`).

Each group's answer is a race result (certified at the race's level, given i.i.d. fresh items;
:mod:`pacbayes_sft.stats.allocation`): a single best bucket, an ε-tie, or undecided at the item
cap. A group whose cells are not all finished (every bucket, every seed) is reported as missing,
never raced on part of its buckets or seeds (a started race keeps its cells), so a decide stage run
beside a sweep still filling its grid races each group once it is whole. The races' files are those
of ``pacbayes-sft race`` (``<run>/race/``), so a decide stage cut short resumes where it stopped, and a report shows its answers beside the bootstrap's, which
is a separate, uncertified count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..stats.allocation import RaceResult
from ..stats.seeds import SeedDecision
from ..sweep.decide_config import DecideConfig
from ..sweep.store import folder_config
from .groups import Group, grid_groups, race_groups
from .run import race_group
from .seed_stage import seed_group, wants_seed_stage


@dataclass(frozen=True)
class GroupDecision:
    """One group's decision: the race ``result`` (None when the group's cells are missing), its
    compute ``seconds`` and the seeds its items were averaged over."""

    group: Group
    result: RaceResult | None
    seconds: float = 0.0
    seeds: tuple[int, ...] = ()
    mixture: str | None = None
    over_seeds: dict | None = None
    note: str = ""

    @property
    def label(self) -> str:
        """``base/objective/n``, with ``@mixture`` for a race on another mixture than the test set's."""
        return str(self.group) + ("" if self.mixture is None else f"@{self.mixture}")

    def line(self) -> str:
        """One console line: the answer and what it rests on (and, when computed, the answer over seeds)."""
        if self.result is None:
            return f"{self.label}: not decided — a cell of the group (some bucket or seed) is not finished (run the sweep first)"
        r = self.result
        text = (f"{self.label}: {r.statement()} ({r.n_items} test items, seeds {', '.join(map(str, self.seeds))}, "
                f"race: certified at {r.level:.0%} on fresh items for these adapters, {self.seconds:.0f} s)")  # fmt: skip
        if self.note:
            text += f" [{self.note}]"
        s = self.over_seeds or {}
        if s.get("status") == "done":
            text += f"; {SeedDecision.from_dict(s).statement()}"
        elif s.get("status") == "skipped":
            text += f"; over seeds: not computed ({s['why']})"
        return text


def decide_sweep(run_dir: str | Path, settings: DecideConfig | None = None, *, progress: bool = False) -> list[GroupDecision]:
    """Race every group of the sweep in ``run_dir`` with ``settings`` (default: the folder config's
    ``decide`` section), on the test mixture and then on each of ``settings.mixtures``, and decide
    over seeds up to ``settings.max_seeds`` (looks from ``settings.min_seeds``); one :class:`GroupDecision` per (group, mixture), grid order.
    ValueError when the folder is not a sweep, or its task cannot draw fresh test items."""
    out = Path(run_dir)
    if not (out / "sweep.json").is_file():
        raise ValueError(f"run_dir {str(out)!r} is not a sweep's output folder (no sweep.json); run the sweep first")
    cfg, _ = folder_config(out)
    s = settings if settings is not None else cfg.decide
    if not isinstance(s, DecideConfig):
        raise ValueError(f"settings must be a DecideConfig, got {type(s).__name__}")
    if cfg.task.kind != "igsm" and s.mixtures:
        raise ValueError(f"decide.mixtures: task kind {cfg.task.kind!r} has only its test file; only 'igsm' draws other mixtures")
    ready = set(race_groups(out, complete=True))  # never raced on part of its seeds: the race would keep them
    mixtures = [(None, None), *s.mixtures.items()]
    docs = {}
    for g in grid_groups(cfg):  # every race first, then the seed stages (which may train more seeds)
        for name, weights in mixtures:
            if g in ready:
                docs[(g, name)] = race_group(out, g, epsilon=s.epsilon, level=s.level, round_items=s.round_items,
                                             max_items=s.max_items, mixture=None if name is None else (name, weights),
                                             progress=progress)  # fmt: skip
    if wants_seed_stage(s.max_seeds, len(cfg.seeds)):
        for (g, name) in docs:
            docs[(g, name)] = seed_group(out, g, mixture=name, max_seeds=s.max_seeds, min_seeds=s.min_seeds,
                                         progress=progress)  # fmt: skip
    decisions = []
    for g in grid_groups(cfg):
        for name, _ in mixtures:
            doc = docs.get((g, name))
            if doc is None:
                decisions.append(GroupDecision(g, None, mixture=name))
                continue
            seconds = doc["seconds"] + (doc.get("seeds") or {}).get("seconds", 0.0)
            decisions.append(GroupDecision(g, RaceResult.from_dict(doc["result"]), seconds, tuple(doc["cell_seeds"]),
                                           name, doc.get("seeds"), doc.get("pool_used_up", "")))  # fmt: skip
    return decisions
