"""Sweeps that outgrow one process: every cell is one task of a launcher backend — submitit, on Slurm
or as local processes, or one added by :func:`register_launcher`.

The launcher keeps at most ``resources.max_parallel`` tasks in flight and gives a free slot the
next unfinished cell, so long cells do not hold up a fixed shard. Each task asks for the
resources of :class:`~pacbayes_sft.sweep.config.Resources` (GPUs, CPU cores, memory, a time
limit, Slurm's partition, account, QOS, constraint, more sbatch options and setup lines). A task
that fails, is killed or is preempted is resubmitted up to ``resources.max_retries`` times; after
that its cell is written to ``failed/<cell id>.json`` with the error (the exception, the job id
and its log file) and reported, never silently skipped. The job ids go to ``launcher/jobs.json``,
so that a launcher started again adopts the jobs of one that was stopped instead of submitting
their cells twice. The Slurm specifics live in :mod:`.slurm`.

The run folder's finished-cell records stay the one source of truth: a task runs its cell with
the same code as :func:`~pacbayes_sft.sweep.runner.run_sweep` and writes the same record, so a
folder started under one launcher resumes under another, or with no launcher at all.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import submitit
import torch

from ..registry import check_free, pop_registered
from .cells import cells_of, find_cell, select_cells
from .config import Resources, SweepConfig, normalise_config
from .runner import base_record, cell_summary, prepare_bases, read_cell, run_cell, sweep_context, write_record
from .slurm import SlurmLauncher, SubmissionRefused, describe_failure, slurm_parameters
from .store import atomic_write, claim_folder, folder_config, write_failure

log = logging.getLogger("pacbayes_sft.sweep")


class Executor(Protocol):
    """What a launcher backend builds: ``submit(fn, *args)`` starts ``fn(*args)`` somewhere and
    returns a job with ``done() -> bool`` and ``result()`` (``fn``'s value, or raises its error).
    A backend may also offer ``submit_named(name, fn, *args)`` (a job named after its task) and
    ``adopt(job_id) -> job | None`` (reattach a job in flight that an earlier launcher submitted);
    a job with ``job_id`` and ``paths.stderr`` gets them named in its failure record."""

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
    """A submitit executor on ``cluster`` ("local" processes, or "slurm" with the sbatch options
    of :func:`~pacbayes_sft.sweep.slurm.slurm_parameters`) whose every task asks for
    ``resources``; its logs go under ``folder/<job id>/``. (The ``slurm`` launcher wraps one in
    :class:`~pacbayes_sft.sweep.slurm.SlurmLauncher`.)"""
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    ex.update_parameters(**slurm_parameters(resources))  # another cluster ignores the slurm_* ones
    return ex


LAUNCHERS: dict[str, Callable[[Path, Resources], Executor]] = {
    "local": functools.partial(submitit_executor, "local"),
    "slurm": SlurmLauncher,
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
    """None when the job finished, else its error in one line: the exception its task raised (type
    and message) or how its job ended, with the job id and log file where the backend has them."""
    try:
        job.result()
    except Exception as exc:  # a failed, killed or preempted task
        return describe_failure(exc, job)
    return None


def schedule(
    submit: Callable[[str], Any],
    tasks: Iterable[str],
    resources: Resources,
    *,
    poll_s: float = 1.0,
    on_submit: Callable[[str, Any], None] | None = None,
    on_failure: Callable[[str, int, str], None] | None = None,
    adopted: Mapping[str, Any] | None = None,
) -> tuple[list[str], dict[str, tuple[int, str]]]:
    """Run ``tasks`` with at most ``max_parallel`` in flight, resubmitting a failed one (first in
    line) up to ``max_retries`` times; ``adopted`` maps tasks to jobs already in flight (submitted
    by an earlier launcher). ``on_failure(task, attempts, error)`` hears of each task that failed
    every attempt. Returns (finished task ids, {failed id: (attempts, error)}). A submission the
    scheduler refuses for good (:class:`SubmissionRefused`) is not retried: nothing more is
    submitted, the jobs in flight are waited for, and then it is raised."""
    adopted = dict(adopted or {})
    pending, attempts = deque(t for t in tasks if t not in adopted), Counter(dict.fromkeys(adopted, 1))
    running: dict[Any, str] = {job: task for task, job in adopted.items()}
    done: list[str] = []
    failed: dict[str, tuple[int, str]] = {}
    refused: SubmissionRefused | None = None

    def retry_or_fail(task: str, error: str) -> None:
        if attempts[task] <= resources.max_retries:
            log.warning("task %s failed (attempt %d), resubmitting: %s", task, attempts[task], error)
            pending.appendleft(task)
            return
        failed[task] = (attempts[task], error)
        if on_failure is not None:
            on_failure(task, attempts[task], error)

    while pending or running:
        while pending and len(running) < resources.max_parallel:
            task = pending.popleft()
            attempts[task] += 1
            try:
                job = submit(task)
            except SubmissionRefused as exc:  # every later job would be refused alike
                refused = exc
                pending.clear()
                break
            except Exception as exc:  # a transient refusal (the controller busy, say): a failed attempt
                retry_or_fail(task, f"{type(exc).__name__} at submission: {exc}")
                time.sleep(5 * poll_s * attempts[task])  # give the scheduler time before the next try
                continue
            running[job] = task
            if on_submit is not None:
                on_submit(task, job)
        for job in [j for j in running if j.done()]:
            task, error = running.pop(job), task_error(job)
            if error is None:
                done.append(task)
            else:
                retry_or_fail(task, error)
        if running:
            time.sleep(poll_s)
    if refused is not None:
        raise refused
    return done, failed


class JobLog:
    """``launcher/jobs.json``: the job ids submitted for each task (by a backend that can adopt
    jobs, such as slurm), so that a launcher started again (after the last one was stopped) adopts
    the jobs still in flight instead of submitting their cells twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs: dict[str, list[str]] = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, task: str, job: Any) -> None:
        """Record that ``job`` (when it has a ``job_id``) runs ``task``."""
        if getattr(job, "job_id", None) is None:
            return
        self.jobs.setdefault(task, []).append(str(job.job_id))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.jobs, indent=1))

    def adopt(self, ex: Executor, tasks: Iterable[str]) -> dict[str, Any]:
        """{task: its last job} for the ``tasks`` whose last job is still in flight (when the backend
        can reattach jobs: an ``adopt(job_id)`` method)."""
        reattach = getattr(ex, "adopt", None)
        found = {t: reattach(self.jobs[t][-1]) for t in tasks if reattach is not None and self.jobs.get(t)}
        for task, job in found.items():
            if job is not None:
                log.info("task %s: adopting job %s, still in flight from an earlier launcher", task, job.job_id)
        return {t: j for t, j in found.items() if j is not None}


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
    after every retry with their errors (also in ``failed/<id>.json``) and attempts. Jobs still in
    flight from an earlier, stopped launcher on the same folder are adopted, not submitted again."""
    cfg = normalise_config(cfg)
    out = Path(out_dir)
    ex = executor(launcher, out / "launcher", cfg.resources)  # refuses a bad launcher before anything is written
    (out / "cells").mkdir(parents=True, exist_ok=True)
    state = claim_folder(out, cfg, update=update)
    prepare_bases(cfg, out)  # builds any tiny base once, before the tasks would race for it
    grid = cells_of(cfg)
    selected = select_cells(grid, only)
    bases = [f"{b.name}__base" for b in cfg.bases]
    todo = [t for t in bases + [c.id for c in selected] if read_cell(out / "cells" / f"{t}.json", state) is None]
    jobs = JobLog(out / "launcher" / "jobs.json")
    threads = cfg.resources.cpus_per_task

    def submit(task: str) -> Any:
        named = getattr(ex, "submit_named", None)
        args = (run_task, str(out), task, threads)
        job = named(f"pacbayes-sft-{task}", *args) if named is not None else ex.submit(*args)
        if hasattr(ex, "adopt"):  # a backend that can reattach its jobs: record them for a launcher started again
            jobs.add(task, job)
        return job

    def on_failure(task: str, attempts: int, error: str) -> None:
        write_failure(out, task, attempts=attempts, error=error)

    done, failed = schedule(
        submit, todo, cfg.resources, poll_s=poll_s, on_submit=on_submit, on_failure=on_failure,
        adopted=jobs.adopt(ex, todo),
    )  # fmt: skip
    ran = [t for t in done if not t.endswith("__base")]
    return {
        "cells": len(grid),
        "selected": len(selected),
        "ran": len(ran),
        "skipped": len(selected) - sum(not t.endswith("__base") for t in todo),
        "failed": {t: e for t, (_, e) in failed.items()},
        "attempts": {t: n for t, (n, _) in failed.items()},
        "launcher": launcher,
    }
