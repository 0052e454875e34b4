"""The Slurm backend of the launcher: one sbatch job per task (no arrays), through submitit.

What a real cluster needs beyond submitit's defaults:

- the warning signal (``--signal=USR2@delay``) is derived from the time limit
  (:func:`signal_delay_s`); a limit under :data:`MIN_TIMEOUT_MIN` is refused, since Slurm may warn
  a job up to a minute before the delay and submitit then ends it as timed out;
- job states come from ``squeue``, and from ``sacct`` for the jobs the controller no longer holds;
  where accounting fails, a job gone from the queue has ended and its result file (or its cell's
  record) says how. When neither answers for ``JobStates.blind_s`` seconds,
  :class:`SlurmUnreachable` says so — never a hang;
- a submission sbatch refuses for good (a bad partition, account or QOS) raises
  :class:`SubmissionRefused` once, leaves no files behind and is not retried; a transient one
  (the controller busy, a submit limit reached) is a failed attempt, retried like a failed job;
- :meth:`SlurmLauncher.adopt` reattaches a job an earlier, stopped launcher submitted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from .resources import Resources

log = logging.getLogger("pacbayes_sft.sweep")

MIN_TIMEOUT_MIN = 3
"""The shortest ``--timeout-min`` the Slurm launcher accepts (see :func:`signal_delay_s`)."""
LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
     "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip
TRANSIENT = ("socket timed out", "temporarily unavailable", "try again", "unable to contact slurm controller",
             "submit limit", "maxsubmit", "connection refused", "slurm_persist_conn")  # fmt: skip


class SubmissionRefused(ValueError):
    """sbatch refused a job for a reason a retry does not change (a bad partition, account, QOS)."""


class SlurmUnreachable(RuntimeError):
    """Neither sacct nor squeue told the state of the launcher's jobs for too long."""


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which Slurm warns a job (USR2): min(90, 10% of the limit),
    at least 10. Slurm may send it up to a minute earlier still, so a cell is sure of
    ``timeout_min * 60 - delay - 60`` seconds."""
    return min(90, max(10, timeout_min * 6))


def check_slurm(resources: Resources) -> None:
    """ValueError naming the argument when Slurm's clients are missing or the limit is too short."""
    absent = [c for c in ("sbatch", "squeue", "srun") if shutil.which(c) is None]
    if absent:
        raise ValueError(f"--launcher slurm needs Slurm's {', '.join(absent)} on PATH (run it on a login node)")
    if resources.timeout_min < MIN_TIMEOUT_MIN:
        raise ValueError(
            f"resources.timeout_min (--timeout-min) must be >= {MIN_TIMEOUT_MIN} under --launcher slurm, got "
            f"{resources.timeout_min}: Slurm may warn a job (USR2) up to a minute before the signal delay, "
            "which would end a cell almost as soon as it starts"
        )


def slurm_parameters(resources: Resources) -> dict[str, Any]:
    """submitit's AutoExecutor parameters for a job that asks for ``resources``."""
    params: dict[str, Any] = {
        "name": "pacbayes-sft",
        "timeout_min": resources.timeout_min,
        "cpus_per_task": resources.cpus_per_task,
        "mem_gb": resources.mem_gb,
        "slurm_signal_delay_s": signal_delay_s(resources.timeout_min),
    }
    if resources.gpus_per_task:
        params["gpus_per_node"] = resources.gpus_per_task
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(resources, key):
            params[f"slurm_{key}"] = getattr(resources, key)
    if resources.sbatch:
        params["slurm_additional_parameters"] = {k: v if v else True for k, v in resources.sbatch.items()}
    if resources.setup:
        params["slurm_setup"] = list(resources.setup)
    return params


def _first_word(state: str) -> str:
    return state.split()[0].upper() if state.strip() else ""


def _query(argv: list[str]) -> tuple[bool, str]:
    """(whether the command succeeded, its output or its error in one line)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"{argv[0]}: {exc}"
    if out.returncode:
        return False, " ".join((out.stderr or out.stdout).split()) or f"{argv[0]} exited with {out.returncode}"
    return True, out.stdout


def _table(text: str) -> dict[str, str]:
    """{job id: state} from ``id|state`` lines."""
    return dict(line.strip().split("|", 1) for line in text.splitlines() if "|" in line)


class JobStates:
    """The Slurm state of a set of jobs, refreshed at most every ``refresh_s`` seconds: from
    ``squeue`` (the controller's view of the jobs it still holds) and, for a job it no longer
    shows or when it fails, from ``sacct``. A job neither knows has left the queue: state ``GONE``
    (its result file or its cell's record says how it ended). When neither answers for
    ``blind_s`` seconds, :class:`SlurmUnreachable`."""

    def __init__(self, refresh_s: float = 5.0, blind_s: float = 600.0) -> None:
        self.refresh_s, self.blind_s = refresh_s, blind_s
        self.states: dict[str, str] = {}
        self._last, self._seen = float("-inf"), time.time()
        self._warned = False

    def state(self, job_id: str) -> str | None:
        """The job's state (``GONE`` once neither squeue nor sacct knows it); None until known."""
        if job_id not in self.states or time.time() - self._last >= self.refresh_s:
            self.refresh([*{j for j, s in self.states.items() if s in LIVE_STATES}, job_id])
        return self.states.get(job_id)

    def refresh(self, job_ids: Iterable[str]) -> None:
        """Ask squeue, then sacct, about ``job_ids``."""
        ids = sorted(set(job_ids))
        self._last = time.time()
        ok, text = _query(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)])
        answered = ok or "invalid job id" in text.lower()  # squeue's answer when it holds none of them
        queued = _table(text) if ok else {}
        rest = [j for j in ids if j not in queued]
        ended = self._sacct(rest, squeue_error=None if answered else text) if rest else {}
        if not answered and ended is None:
            self._last = float("-inf")  # ask again at the next look
            return
        self._seen = time.time()
        # a job squeue does not hold has left the queue; without squeue's word, one sacct lacks is still unknown
        found = queued | {j: (ended or {}).get(j, "GONE" if answered else "") for j in rest}
        self.states |= {j: _first_word(s) for j, s in found.items() if j in ids and s.strip()}

    def _sacct(self, ids: list[str], squeue_error: str | None) -> dict[str, str] | None:
        """The accounting state of ``ids``; None when sacct fails (SlurmUnreachable when squeue
        failed too, for ``blind_s``)."""
        ok, text = _query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
        if ok:
            return _table(text)
        if squeue_error is not None and time.time() - self._seen > self.blind_s:
            raise SlurmUnreachable(
                f"the state of Slurm jobs {', '.join(ids)} is unknown for {self.blind_s:.0f} s: "
                f"squeue: {squeue_error}; sacct: {text}"
            )
        if not self._warned:
            self._warned = True
            log.warning("sacct failed (%s): a job gone from the queue counts as ended, and its result file or its "
                        "cell's record says how", text)  # fmt: skip
        return None


class TrackedJob:
    """A submitted (or adopted) Slurm job: ``done()`` from its result file or its Slurm state,
    ``result()`` its task's value, or the error it ended with."""

    results_timeout_s = 15.0  # how long an ended job's result file may take to appear (a slow shared disk)

    def __init__(self, job: submitit.Job, states: JobStates) -> None:
        self.job, self.states = job, states
        self.job_id, self.paths = job.job_id, job.paths

    def done(self) -> bool:
        """Whether the job has ended: its result file is there, or Slurm says it is no longer live."""
        if self.paths.result_pickle.exists():
            return True
        state = self.states.state(self.job_id)
        return state is not None and state not in LIVE_STATES

    def result(self) -> Any:
        """The task's value; its error (submitit's FailedJobError) when it raised, UncompletedJobError
        when the job ended without a result (cancelled, killed, out of memory)."""
        deadline = time.time() + self.results_timeout_s
        while not self.paths.result_pickle.exists() and time.time() < deadline:
            time.sleep(0.5)
        if self.paths.result_pickle.exists():
            return self.job.result()
        state = self.states.states.get(self.job_id) or "unknown"
        raise UncompletedJobError(f"job {self.job_id} ended without a result (Slurm state {state}){_log_tail(self.paths.stderr)}")


def _log_tail(path: Path) -> str:
    """The last line of a job's error log as '; log says: ...' ('' without one)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f"; log says: {lines[-1][:300]}" if lines else ""


class SlurmLauncher:
    """The ``slurm`` launcher backend: every task one sbatch job asking for ``resources``, its
    files and logs under ``folder/<job id>/``."""

    def __init__(self, folder: Path, resources: Resources, states: JobStates | None = None) -> None:
        check_slurm(resources)
        self.folder = Path(folder)
        self.states = states or JobStates()
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster="slurm")
        self.executor.update_parameters(**slurm_parameters(resources))

    def submit(self, fn: Callable[..., Any], *args: Any) -> TrackedJob:
        """Submit ``fn(*args)`` as a job named ``pacbayes-sft`` (see :meth:`submit_named`)."""
        return self.submit_named("pacbayes-sft", fn, *args)

    def submit_named(self, name: str, fn: Callable[..., Any], *args: Any) -> TrackedJob:
        """Submit ``fn(*args)`` as a job named ``name``. SubmissionRefused when sbatch refuses it for
        good; RuntimeError when it may succeed later. Either way no file of it is left behind."""
        self.executor.update_parameters(name=name)
        before = self._litter()
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's error; we raise it once
                job = self.executor.submit(fn, *args)
        except Exception as exc:
            for f in self._litter() - before:
                f.unlink(missing_ok=True)
            raise _refusal(name, exc) from None
        return TrackedJob(job, self.states)

    def _litter(self) -> set[Path]:
        return set(self.folder.glob("*.pkl")) | set(self.folder.glob(".submission_file_*.sh"))

    def adopt(self, job_id: str) -> TrackedJob | None:
        """The job ``job_id`` when it was submitted into this folder (an earlier launcher's) and is
        still queued or running, else None."""
        job = submitit.SlurmJob(folder=self.folder / "%j", job_id=str(job_id))
        if not job.paths.submitted_pickle.is_file() or self.states.state(str(job_id)) not in LIVE_STATES:
            return None
        return TrackedJob(job, self.states)


def _refusal(name: str, exc: Exception) -> Exception:
    """The one-line error of a failed submission: SubmissionRefused unless it looks transient."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    text = "; ".join(dict.fromkeys(lines))
    if any(t in text.lower() for t in TRANSIENT):
        return RuntimeError(f"sbatch failed (may succeed later): {text}")
    return SubmissionRefused(
        f"Slurm refused job {name}: {text} (check --partition, --account, --qos, --constraint, --sbatch and "
        "the sizes asked for); nothing more is submitted"
    )


def describe_failure(exc: BaseException, job: Any) -> str:
    """A failed task's error in one line: the exception it raised (type and message) or how its job
    ended, then the job id and its log file when the job has them."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or ["no message"]
    if isinstance(exc, FailedJobError) and "-" * 22 in str(exc):  # the task raised: its trace ends with it
        trace = [ln.strip() for ln in str(exc).split("-" * 22)[1].splitlines() if ln.strip()]
        text = trace[-1] if trace else lines[0]
    elif isinstance(exc, UncompletedJobError):  # the job died: the first line says how (submitit wraps it)
        first = " ".join(lines[:2]) if len(lines) > 1 and lines[1].startswith("has not produced") else lines[0]
        text = f"{type(exc).__name__}: {first}"
    else:
        text = f"{type(exc).__name__}: {lines[-1]}"
    job_id, paths = getattr(job, "job_id", None), getattr(job, "paths", None)
    if job_id is not None and paths is not None:
        text += f" (job {job_id}; log {paths.stderr})"
    return text
