"""Sweeps that outgrow one process: every cell is one task of a launcher backend — submitit, on Slurm
or as local processes, or one added by :func:`register_launcher`.

The launcher keeps at most ``resources.max_parallel`` tasks in flight and gives a free slot the
next unfinished cell, so long cells do not hold up a fixed shard. Each task asks for the
resources of :class:`~pacbayes_sft.sweep.config.Resources` (GPUs, CPU cores, memory, a time
limit, a Slurm partition). A task that fails, is killed or is preempted is resubmitted up to
``resources.max_retries`` times; after that its cell is written to ``failed/<cell id>.json``
with the error and reported, never silently skipped.

The run folder's finished-cell records stay the one source of truth: a task runs its cell with
the same code as :func:`~pacbayes_sft.sweep.runner.run_sweep` and writes the same record, so a
folder started under one launcher resumes under another, or with no launcher at all.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import submitit
import torch
from submitit.core.utils import UncompletedJobError

from ..registry import check_free, pop_registered
from .cells import cells_of, find_cell, select_cells
from .config import Resources, SweepConfig, normalise_config
from .runner import base_record, cell_summary, prepare_bases, read_cell, run_cell, sweep_context, write_record
from .store import claim_folder, folder_config, write_failure

log = logging.getLogger("pacbayes_sft.sweep")


class Executor(Protocol):
    """What a launcher backend builds: ``submit(fn, *args)`` starts ``fn(*args)`` somewhere and
    returns a job with ``done() -> bool`` and ``result()`` (``fn``'s value, or raises its error)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any: ...


def run_task(out_dir: str, task_id: str, threads: int) -> str:
    """One task of a launched sweep, in this process: a base model's evaluation
    (``<base>__base``) or one cell, read from the run folder's config and written as a record."""
    out = Path(out_dir)
    cfg, state = folder_config(out)
    if read_cell(out / "cells" / f"{task_id}.json", state) is not None:
        return task_id  # a retry of a task whose record was written before it died
    torch.set_num_threads(threads)
    ctx = sweep_context(cfg, out)
    if task_id.endswith("__base"):
        base = task_id.removesuffix("__base")
        rec = base_record(ctx, base).stamped(state.stamp(base))
    else:
        cell = find_cell(cfg, task_id, str(out))
        rec = run_cell(ctx, cell, progress=False).stamped(state.stamp(cell.base))
        log.info(cell_summary(rec))
    write_record(out, rec)
    return task_id


def submitit_executor(cluster: str, folder: Path, resources: Resources) -> submitit.AutoExecutor:
    """A submitit executor on ``cluster`` ("local" processes or "slurm") whose every task asks
    for ``resources``; its logs go under ``folder``."""
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params: dict[str, Any] = {
        "name": "pacbayes-sft",
        "timeout_min": resources.timeout_min,
        "cpus_per_task": resources.cpus_per_task,
        "mem_gb": resources.mem_gb,
    }
    if resources.gpus_per_task:
        params["gpus_per_node"] = resources.gpus_per_task
    if cluster == "slurm" and resources.partition:
        params["slurm_partition"] = resources.partition
    ex.update_parameters(**params)
    return ex


LAUNCHERS: dict[str, Callable[[Path, Resources], Executor]] = {
    "local": functools.partial(submitit_executor, "local"),
    "slurm": functools.partial(submitit_executor, "slurm"),
}
"""Every launcher backend by name: ``make(folder, resources) -> Executor`` (the choices of
``pacbayes-sft sweep --launcher``)."""

_BUILT_IN = frozenset(LAUNCHERS)


def register_launcher(
    name: str, make: Callable[[Path, Resources], Executor], *, replace: bool = False
) -> Callable[[Path, Resources], Executor]:
    """Add a launcher backend to :data:`LAUNCHERS`: ``make(folder, resources)`` returns an
    :class:`Executor` (``folder``: where the backend may keep its files; every task should ask for
    ``resources``). :func:`launch_sweep` and ``pacbayes-sft sweep --launcher name`` run each
    unfinished cell through it, with the scheduling, retries and failure records of every
    launcher. ValueError when ``name`` is taken (unless ``replace``; a built-in backend is never
    replaced). Returns ``make``."""
    if not (isinstance(name, str) and name.isidentifier()) or name == "none":
        raise ValueError(f"name must be an identifier other than 'none' (no launcher), got {name!r}")
    if not callable(make):
        raise ValueError(f"make must be a callable make(folder, resources) -> executor, got {make!r}")
    check_free(LAUNCHERS, name, built_in=_BUILT_IN, kind="launcher", replace=replace)
    LAUNCHERS[name] = make
    return make


def unregister_launcher(name: str) -> Callable[[Path, Resources], Executor]:
    """Remove and return the launcher registered as ``name`` (ValueError for an unknown or built-in name)."""
    return pop_registered(LAUNCHERS, name, built_in=_BUILT_IN, kind="launcher")


def executor(launcher: str, folder: Path, resources: Resources) -> Executor:
    """The executor of the backend ``launcher`` (:data:`LAUNCHERS`) whose every task asks for ``resources``."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    return LAUNCHERS[launcher](folder, resources)


def task_error(job: Any) -> str | None:
    """None when the job finished, else its error in one line (the last line of a traceback)."""
    try:
        job.result()
    except Exception as exc:  # a failed, killed or preempted task; its kind is in the message
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or ["no message"]
        # a task that died says so on its first line; a task that raised ends with its exception
        return f"{type(exc).__name__}: {lines[0] if isinstance(exc, UncompletedJobError) else lines[-1]}"
    return None


def _retry_or_fail(task: str, error: str, attempts: Counter, resources: Resources, pending: deque, failed: dict) -> None:
    """Put a failed task first in line again while it has retries left, else record its failure."""
    if attempts[task] <= resources.max_retries:
        log.warning("task %s failed (attempt %d), resubmitting: %s", task, attempts[task], error)
        pending.appendleft(task)
    else:
        failed[task] = (attempts[task], error)


def schedule(
    submit: Callable[[str], Any],
    tasks: Iterable[str],
    resources: Resources,
    *,
    poll_s: float = 1.0,
    on_submit: Callable[[str, Any], None] | None = None,
) -> tuple[list[str], dict[str, tuple[int, str]]]:
    """Run ``tasks`` with at most ``max_parallel`` in flight, resubmitting a failed one (first in
    line) up to ``max_retries`` times. Returns (finished task ids, {failed id: (attempts, error)})."""
    pending, attempts = deque(tasks), Counter()
    running: dict[Any, str] = {}
    done: list[str] = []
    failed: dict[str, tuple[int, str]] = {}
    while pending or running:
        while pending and len(running) < resources.max_parallel:
            task = pending.popleft()
            attempts[task] += 1
            try:
                job = submit(task)
            except Exception as exc:  # the scheduler refused the job (a bad partition, say): a failed attempt
                _retry_or_fail(task, f"{type(exc).__name__} at submission: {exc}", attempts, resources, pending, failed)
                continue
            running[job] = task
            if on_submit is not None:
                on_submit(task, job)
        for job in [j for j in running if j.done()]:
            task, error = running.pop(job), task_error(job)
            if error is None:
                done.append(task)
            else:
                _retry_or_fail(task, error, attempts, resources, pending, failed)
        if running:
            time.sleep(poll_s)
    return done, failed


def launch_sweep(
    cfg: SweepConfig | dict,
    out_dir: str | Path,
    *,
    launcher: str = "local",
    only: Mapping[str, Iterable[object]] | None = None,
    update: bool = False,
    poll_s: float = 1.0,
    on_submit: Callable[[str, Any], None] | None = None,
) -> dict:
    """Run (or resume) the sweep into ``out_dir`` with every unfinished cell a task of
    ``launcher`` (submitit's ``local`` processes or ``slurm``, or a backend added by
    :func:`register_launcher`). Returns what ran, what was skipped, and the cells that failed
    after every retry with their errors (also in ``failed/<id>.json``)."""
    cfg = normalise_config(cfg)
    if launcher not in LAUNCHERS:  # before anything is written
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    state = claim_folder(out, cfg, update=update)
    prepare_bases(cfg, out)  # builds any tiny base once, before the tasks would race for it
    grid = cells_of(cfg)
    selected = select_cells(grid, only)
    bases = [f"{b.name}__base" for b in cfg.bases]
    todo = [t for t in bases + [c.id for c in selected] if read_cell(out / "cells" / f"{t}.json", state) is None]
    ex = executor(launcher, out / "launcher", cfg.resources)
    threads = cfg.resources.cpus_per_task

    def submit(task: str) -> Any:
        return ex.submit(run_task, str(out), task, threads)

    done, failed = schedule(submit, todo, cfg.resources, poll_s=poll_s, on_submit=on_submit)
    for task, (n, error) in failed.items():
        write_failure(out, task, attempts=n, error=error)
    ran = [t for t in done if not t.endswith("__base")]
    return {
        "cells": len(grid),
        "selected": len(selected),
        "ran": len(ran),
        "skipped": len(selected) - sum(not t.endswith("__base") for t in todo),
        "failed": {t: e for t, (_, e) in failed.items()},
        "launcher": launcher,
    }
