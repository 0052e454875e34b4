"""What one cell asks of a cluster under a launcher (``resources`` in a sweep config, the
resource options of ``pacbayes-sft sweep``). None of it enters the cell hash."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import option

# sbatch options the launcher sets itself, and the option of ours that sets each
OWN_SBATCH = {
    "time": "--timeout-min", "mem": "--mem-gb", "cpus-per-task": "--cpus-per-task", "gpus-per-node": "--gpus-per-task",
    "partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
    "job-name": "the launcher (one job per cell, named after it)", "output": "the launcher (DIR/launcher/<job id>/)",
    "error": "the launcher (DIR/launcher/<job id>/)", "signal": "the launcher (from --timeout-min)",
    "array": "the launcher (one job per cell, no arrays)", "open-mode": "the launcher",
}  # fmt: skip
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")


@dataclass
class Resources:
    """What one cell asks of a cluster when the sweep runs under a launcher (``--launcher``):
    each cell is one task. Not part of the hash: where a cell runs does not change its result."""

    gpus_per_task: int = option(0, "GPUs per cell task (Slurm: --gpus-per-node, one task per job).")
    cpus_per_task: int = option(2, "CPU cores per cell task (also its torch threads).")
    mem_gb: float = option(16.0, "Memory per cell task, in GB.")
    timeout_min: int = option(
        120, "Time limit per cell task, in minutes (Slurm: at least 3; the job is warned min(90 s, 10%) plus up "
        "to a minute before it)."
    )
    partition: str = option("", "Slurm partition (empty: the cluster's default).")
    account: str = option("", "Slurm account the jobs are charged to (empty: your default account).")
    qos: str = option("", "Slurm quality of service (empty: the default).")
    constraint: str = option("", "Slurm node features the jobs need, e.g. a100|h100 (empty: any node).")
    sbatch: dict[str, str] = option(
        help="More sbatch options, name (without --) to value, e.g. {mail-type: END}; an empty value is a bare flag.",
        factory=dict,
    )
    setup: list[str] = option(
        help="Shell lines each Slurm job runs before its cell, e.g. 'module load cuda' or 'source env/bin/activate'.",
        factory=list,
    )
    max_parallel: int = option(4, "Cell tasks in flight at once; a free slot takes the next unfinished cell.")
    max_retries: int = option(2, "Times a failed or preempted cell task is resubmitted before it is reported as failed.")

    def __post_init__(self) -> None:
        for key in ("gpus_per_task", "max_retries"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ValueError(f"resources.{key} must be an integer >= 0, got {getattr(self, key)!r}")
        for key in ("cpus_per_task", "timeout_min", "max_parallel"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"resources.{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not self.mem_gb > 0:
            raise ValueError(f"resources.mem_gb must be > 0, got {self.mem_gb!r}")
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(self, key)
            if not isinstance(value, str) or any(c.isspace() for c in value):
                raise ValueError(f"resources.{key} (--{key}) must be one word without spaces, got {value!r}")
        _check_sbatch(self.sbatch)
        _check_setup(self.setup)


def _check_sbatch(options: object) -> None:
    if not isinstance(options, dict):
        raise ValueError(f"resources.sbatch (--sbatch) must map option names to values, got {options!r}")
    for key, value in options.items():
        if not isinstance(key, str) or not _SBATCH_KEY.fullmatch(key):
            raise ValueError(
                f"resources.sbatch (--sbatch KEY=VALUE) keys are sbatch options without the leading --, "
                f"in lower case (e.g. mail-type=END), got {key!r}"
            )
        if key in OWN_SBATCH:
            raise ValueError(f"resources.sbatch (--sbatch) must not set {key!r}: it is set by {OWN_SBATCH[key]}")
        if not isinstance(value, str) or "\n" in value:
            raise ValueError(f"resources.sbatch (--sbatch) value of {key!r} must be a one-line string, got {value!r}")


def _check_setup(lines: object) -> None:
    if not isinstance(lines, list) or not all(isinstance(x, str) and x.strip() and "\n" not in x for x in lines):
        raise ValueError(f"resources.setup (--setup) must be a list of non-empty one-line shell commands, got {lines!r}")
