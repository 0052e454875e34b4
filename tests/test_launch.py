"""Sweeps under a launcher (submitit's local processes): dynamic assignment, retries after a
killed task, failures reported with their error, and records identical to a plain local run."""

import dataclasses
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from pacbayes_sft.cli import main
from pacbayes_sft.sweep import load_config, run_sweep
from pacbayes_sft.sweep.launch import launch_sweep, schedule
from pacbayes_sft.sweep.slurm import SubmissionRefused
from pacbayes_sft.sweep.store import failures

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


def _four_cells():
    cfg = load_config(QUICK)
    cfg = dataclasses.replace(cfg, objectives=["sft"], budgets=[8, 16], buckets={"easy": [1], "hard": [3]}, threads=1)
    return dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, cpus_per_task=1, max_parallel=2))


def _results(out: Path) -> dict:
    """What a cell computed (not how long it took): rows, items, bound terms, σ grid, ledger."""
    keep = ("cell", "loss", "rows", "items", "terms", "sigma_grid", "ledger", "config_hash", "cell_hash")
    return {f.name: {k: v for k, v in json.loads(f.read_text()).items() if k in keep} for f in (out / "cells").glob("*.json")}


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _kill_when_training_is_saved(out: Path, cell_id: str, job, killed: list) -> None:
    """SIGKILL the process running the task (the child of submitit's local controller, whose pid
    is the job id) once its adapter is saved: mid-cell, before its evaluation and bound."""
    saved = out / "adapters" / cell_id / "adapter_config.json"
    deadline = time.time() + 300
    while time.time() < deadline and not job.done():
        if saved.is_file():
            for pid in _children(int(job.job_id)):
                os.kill(pid, signal.SIGKILL)
            killed.append(cell_id)
            return
        time.sleep(0.02)


def test_a_killed_task_is_retried_and_the_records_equal_a_plain_run(tmp_path):
    cfg = dataclasses.replace(_four_cells(), budgets=[8])  # two cells: one killed and retried, one not
    run_sweep(cfg, tmp_path / "plain", progress=False)
    out, victim, submitted, killed = tmp_path / "launched", "tiny__sft__n8__hard__s0", [], []

    def on_submit(task, job):
        submitted.append(task)
        if task == victim and not killed:
            threading.Thread(target=_kill_when_training_is_saved, args=(out, victim, job, killed), daemon=True).start()

    summary = launch_sweep(cfg, out, launcher="local", poll_s=0.2, on_submit=on_submit)
    assert killed == [victim]
    assert submitted.count(victim) == 2 and len(submitted) == 1 + 2 + 1  # the base, two cells, one retry
    assert summary["failed"] == {} and summary["ran"] == 2 and failures(out) == {}
    assert _results(out) == _results(tmp_path / "plain")
    # the same folder resumes under the plain runner: nothing left to do
    assert run_sweep(cfg, out, progress=False)["ran"] == 0


def test_a_cell_that_fails_every_attempt_is_reported_with_its_error(tmp_path, capsys):
    cfg = _four_cells()
    cfg = dataclasses.replace(cfg, budgets=[8], buckets={"easy": [1]})
    cfg = dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, max_retries=1))
    cfg_path = tmp_path / "one.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg)))
    out = tmp_path / "o"
    (out / "adapters").mkdir(parents=True)
    (out / "adapters" / "tiny__sft__n8__easy__s0").write_text("not a folder: saving the adapter fails")
    rc = main(["sweep", "--config", str(cfg_path), "--out", str(out), "--launcher", "local", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "cell tiny__sft__n8__easy__s0 FAILED after 2 attempts" in err
    (failed,) = failures(out).values()
    assert failed["attempts"] == 2 and failed["error"]
    # the error is the cell's own exception, with the job that raised it and its log file
    assert re.search(r"NotADirectoryError: .*Not a directory.* \(job \d+; log .*launcher/\d+/\d+_0_log\.err\)", failed["error"])
    assert failed["error"] in err and "failed during processing" not in err
    assert (out / "cells" / "tiny__base.json").is_file()  # the other task finished


class _FakeJob:
    def __init__(self, outcome):
        self.outcome = outcome

    def done(self):
        return True

    def result(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_schedule_keeps_at_most_max_parallel_in_flight_and_retries_first_in_line():
    cfg = _four_cells()
    res = dataclasses.replace(cfg.resources, max_parallel=2, max_retries=2)
    plan = {"a": [RuntimeError("boom\nlast line")] * 3, "b": [RuntimeError("once"), "ok"], "c": ["ok"]}
    order = []

    def submit(task):
        order.append(task)
        return _FakeJob(plan[task].pop(0))

    done, failed = schedule(submit, ["a", "b", "c"], res, poll_s=0)
    assert sorted(done) == ["b", "c"]
    assert failed == {"a": (3, "RuntimeError: last line")}
    assert order[:2] == ["a", "b"] and order.count("a") == 3 and order.count("b") == 2


def test_a_transient_submission_error_is_a_failed_attempt_and_a_refusal_is_not_retried():
    res = dataclasses.replace(_four_cells().resources, max_retries=1, max_parallel=1)
    calls = []

    def submit(task):
        calls.append(task)
        if task == "busy":
            raise RuntimeError("sbatch failed (may succeed later): Socket timed out on send/recv operation")
        if task == "bad":
            raise SubmissionRefused("Slurm refused job x: sbatch: error: invalid partition specified: nope")
        return _FakeJob("ok")

    done, failed = schedule(submit, ["busy", "good"], res, poll_s=0)
    assert done == ["good"] and calls.count("busy") == 2 and failed["busy"][0] == 2
    calls.clear()
    with pytest.raises(SubmissionRefused, match="invalid partition"):
        schedule(submit, ["good", "bad", "later"], res, poll_s=0)
    assert calls == ["good", "bad"]  # refused once, not retried, and nothing submitted after it


def test_launcher_and_resources_are_checked(tmp_path, capsys):
    cfg = _four_cells()
    with pytest.raises(ValueError, match="launcher must be one of"):
        launch_sweep(cfg, tmp_path / "x", launcher="ray")
    assert not (tmp_path / "x").exists()  # refused before anything was written
    assert main(["sweep", "--config", "quick", "--out", str(tmp_path / "y"), "--launcher", "local",
                 "--max-parallel", "0"]) == 2
    assert "resources.max_parallel must be an integer >= 1" in capsys.readouterr().err
