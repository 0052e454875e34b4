"""The Slurm launcher: first against fake Slurm commands (every failure mode, in seconds), then
against a real one-node Slurm cluster (tests/slurm_cluster.py; the ``slurm`` marker), where a
sweep's records equal a plain run's, a cancelled job is retried, a cell's error reaches the
console, a refused submission is refused once, and a launcher killed mid-run is replaced by one
that adopts its jobs."""

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from slurm_cluster import running_cluster

from pacbayes_sft.cli import jobs as cli_jobs
from pacbayes_sft.cli import main
from pacbayes_sft.sweep import load_config, run_sweep
from pacbayes_sft.sweep.config import cell_hash, config_hash
from pacbayes_sft.sweep.launch import JobLog, launch_sweep, schedule
from pacbayes_sft.sweep.resources import Resources
from pacbayes_sft.sweep.slurm import (
    JobStates,
    SlurmLauncher,
    SlurmUnreachable,
    SubmissionRefused,
    TrackedJob,
    signal_delay_s,
    slurm_parameters,
)
from pacbayes_sft.sweep.store import failures

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "srun")


def _two_cells(**resources):
    """The quick config cut to one objective, one budget and two buckets: a base and two cells."""
    cfg = load_config("quick")
    cfg = dataclasses.replace(cfg, objectives=["sft"], budgets=[8], buckets={"easy": [1], "hard": [3]}, threads=1)
    res = dict(cpus_per_task=1, max_parallel=2, mem_gb=1.0, timeout_min=5) | resources
    return dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, **res))


def _results(out: Path) -> dict:
    """What a cell computed (not how long it took)."""
    keep = ("cell", "loss", "rows", "items", "terms", "sigma_grid", "ledger", "config_hash", "cell_hash")
    return {f.name: {k: v for k, v in json.loads(f.read_text()).items() if k in keep} for f in (out / "cells").glob("*.json")}


# ------------------------------------------------------------------------------ fake Slurm commands


class FakeSlurm:
    """Slurm's commands as scripts: each logs its arguments to ``<name>.calls``, prints
    ``<name>.out`` and, when ``<name>.err`` exists, prints it to stderr and exits 1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in COMMANDS:
            script = root / name
            script.write_text(
                f'#!/bin/sh\necho "$*" >> "{root}/{name}.calls"\n'
                f'if [ -f "{root}/{name}.err" ]; then cat "{root}/{name}.err" >&2; exit 1; fi\n'
                f'cat "{root}/{name}.out" 2>/dev/null\nexit 0\n'
            )
            script.chmod(0o755)
        self.set("sbatch", out="Submitted batch job 77\n")

    def set(self, name: str, *, out: str = "", err: str | None = None) -> None:
        (self.root / f"{name}.out").write_text(out)
        (self.root / f"{name}.err").unlink(missing_ok=True)
        if err is not None:
            (self.root / f"{name}.err").write_text(err)

    def calls(self, name: str) -> list[str]:
        f = self.root / f"{name}.calls"
        return f.read_text().splitlines() if f.is_file() else []


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return FakeSlurm(bin_dir)


def _sbatch_script(folder: Path, resources: Resources) -> str:
    return SlurmLauncher(folder, resources).executor._executor._make_submission_file_text("cmd", "uid")


def test_the_signal_delay_follows_the_time_limit_and_short_limits_are_refused(fake_slurm, tmp_path):
    assert [signal_delay_s(m) for m in (3, 5, 10, 120)] == [18, 30, 60, 90]
    script = _sbatch_script(tmp_path, Resources(timeout_min=3))
    assert "#SBATCH --time=3" in script and "#SBATCH --signal=USR2@18" in script  # not submitit's @90
    assert "#SBATCH --signal=USR2@90" in _sbatch_script(tmp_path, Resources(timeout_min=120))
    for minutes in (1, 2):
        with pytest.raises(ValueError, match=r"resources.timeout_min \(--timeout-min\) must be >= 3 under --launcher slurm"):
            SlurmLauncher(tmp_path, Resources(timeout_min=minutes))


def test_cluster_options_reach_the_sbatch_script(fake_slurm, tmp_path):
    res = Resources(
        partition="gpu", account="lab", qos="high", constraint="a100|h100", gpus_per_task=2,
        sbatch={"mail-type": "END", "exclusive": ""}, setup=["module load cuda", "source /env/bin/activate"],
    )  # fmt: skip
    script = _sbatch_script(tmp_path, res)
    for line in ("--partition=gpu", "--account=lab", "--qos=high", "--constraint='a100|h100'", "--gpus-per-node=2",
                 "--mail-type=END", "--exclusive\n"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line
    assert "# setup\nmodule load cuda\nsource /env/bin/activate\n" in script
    assert "--array" not in script  # one job per cell
    assert slurm_parameters(Resources())["slurm_signal_delay_s"] == 90


def test_resources_are_checked_naming_the_argument():
    cases = {
        "account": ("my account", r"resources.account \(--account\) must be one word"),
        "qos": ("a\nb", r"resources.qos \(--qos\) must be one word"),
        "sbatch": ({"time": "5"}, r"resources.sbatch \(--sbatch\) must not set 'time': it is set by --timeout-min"),
        "setup": (["ok", ""], r"resources.setup \(--setup\) must be a list of non-empty one-line"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            Resources(**{key: value})
    with pytest.raises(ValueError, match=r"keys are sbatch options without the leading --"):
        Resources(sbatch={"--mail-type": "END"})


def test_cluster_options_do_not_enter_the_hash():
    cfg = _two_cells()
    cluster = dataclasses.replace(
        cfg.resources, account="a", qos="q", constraint="c", sbatch={"comment": "x"}, setup=["module load y"]
    )
    other = dataclasses.replace(cfg, resources=cluster)
    assert config_hash(other) == config_hash(cfg) and cell_hash(other, "tiny") == cell_hash(cfg, "tiny")


def test_the_command_line_puts_cluster_options_over_the_config(fake_slurm, tmp_path, capsys):
    cfg = _two_cells(sbatch={"comment": "from config", "mail-type": "FAIL"}, setup=["from config"])
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli_jobs.add_commands(sub)
    args = p.parse_args(["sweep", "--config", "quick", "--out", "o", "--account", "lab", "--sbatch", "mail-type=END",
                         "--sbatch", "exclusive", "--setup", "module load a", "--setup", "echo b"])  # fmt: skip
    res = cli_jobs._resources(cfg, args).resources
    assert res.account == "lab" and res.sbatch == {"comment": "from config", "mail-type": "END", "exclusive": ""}
    assert res.setup == ["module load a", "echo b"]
    for bad, message in (
        (["--sbatch", "time=3"], "resources.sbatch (--sbatch) must not set 'time'"),
        (["--account", "a b"], "resources.account (--account) must be one word"),
        (["--timeout-min", "2"], "resources.timeout_min (--timeout-min) must be >= 3"),
    ):
        assert main(["sweep", "--config", "quick", "--out", str(tmp_path / "x"), "--launcher", "slurm", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_the_only_counts_name_the_selection(monkeypatch, tmp_path, capsys):
    summary = {"cells": 12, "selected": 3, "ran": 2, "skipped": 1, "failed": {}, "attempts": {}, "launcher": "local"}
    monkeypatch.setattr(cli_jobs, "launch_sweep", lambda *a, **k: summary)
    assert main(["sweep", "--config", "quick", "--out", str(tmp_path), "--launcher", "local", "--only", "seed=0"]) == 0
    assert "2 cells run, 1 already finished of 3 selected cells (12 in the grid)" in capsys.readouterr().out


def test_a_refused_submission_is_raised_once_and_leaves_no_files(fake_slurm, tmp_path, capsys):
    fake_slurm.set("sbatch", err="sbatch: error: invalid partition specified: nope\n"
                   "sbatch: error: Batch job submission failed: Invalid partition name specified\n")  # fmt: skip
    launcher = SlurmLauncher(tmp_path / "launcher", Resources(partition="nope"))
    with pytest.raises(SubmissionRefused, match="invalid partition specified: nope; sbatch: error: Batch job"):
        schedule(lambda task: launcher.submit_named(task, print, task), ["a", "b"], Resources(max_retries=2), poll_s=0)
    assert len(fake_slurm.calls("sbatch")) == 1  # not retried, and "b" never submitted
    assert capsys.readouterr().err == ""  # submitit's own print of sbatch's error is swallowed
    assert [p.name for p in (tmp_path / "launcher").rglob("*") if p.is_file()] == []
    fake_slurm.set("sbatch", err="sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n")
    with pytest.raises(RuntimeError, match="may succeed later") as info:
        launcher.submit_named("a", print, "a")
    assert not isinstance(info.value, SubmissionRefused)


def test_job_states_fall_back_to_squeue_when_sacct_fails_and_never_hang(fake_slurm, tmp_path):
    fake_slurm.set("sacct", err="sacct: error: Slurm accounting storage is disabled\n")
    fake_slurm.set("squeue", out="77|RUNNING\n")
    states = JobStates(refresh_s=0)
    assert states.state("77") == "RUNNING"
    fake_slurm.set("squeue", out="")  # the job left the queue, and accounting cannot say how
    assert states.state("77") == "GONE"
    launcher = SlurmLauncher(tmp_path / "launcher", Resources(), states)
    job = launcher.submit_named("cell", print, "x")
    job.results_timeout_s = 0.1
    assert job.done()  # no result file, not in the queue: ended
    with pytest.raises(Exception, match=r"job 77 ended without a result \(Slurm state GONE\)"):
        job.result()
    # neither squeue nor sacct answers: an error that says why once blind_s has passed, not a hang
    fake_slurm.set("squeue", err="squeue: error: Unable to contact slurm controller (connect failure)\n")
    blind = JobStates(refresh_s=0, blind_s=0.2)
    assert blind.state("78") is None
    time.sleep(0.3)
    with pytest.raises(SlurmUnreachable, match="unknown for 0 s: squeue: squeue: error: Unable to contact"):
        blind.state("78")


def test_a_restarted_launcher_adopts_jobs_in_flight(fake_slurm, tmp_path):
    log = JobLog(tmp_path / "launcher" / "jobs.json")
    fake_slurm.set("squeue", out="77|RUNNING\n")
    launcher = SlurmLauncher(tmp_path / "launcher", Resources(), JobStates(refresh_s=0))
    log.add("cell", launcher.submit_named("cell", print, "x"))
    log.add("other", type("Job", (), {"job_id": "12"})())
    again = JobLog(tmp_path / "launcher" / "jobs.json")
    assert again.jobs == {"cell": ["77"], "other": ["12"]}
    adopted = again.adopt(launcher, ["cell", "other", "new"])
    assert list(adopted) == ["cell"] and adopted["cell"].job_id == "77"  # job 12 is gone: not adopted
    submitted = []
    adopted["cell"] = _Finished()  # the adopted job ends; the scheduler waits for it and submits only the rest
    done, failed = schedule(lambda t: submitted.append(t) or _Finished(), ["cell", "new"], Resources(), poll_s=0, adopted=adopted)
    assert submitted == ["new"] and sorted(done) == ["cell", "new"] and failed == {}


class _Finished:
    def done(self):
        return True

    def result(self):
        return None


# ------------------------------------------------------------------------------ a real Slurm cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, up while this module's tests run (its daemons are stopped after them)."""
    yield from running_cluster(tmp_path_factory)


def _squeue_state(cluster, job_id: str) -> str:
    return cluster.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()


def _cancel_when_running(cluster, job, cancelled: list) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and _squeue_state(cluster, job.job_id) != "RUNNING":
        time.sleep(0.2)
    cluster.run("scancel", job.job_id)
    cancelled.append(job.job_id)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """A base and two cells under --launcher slurm with accounting broken (a fake sacct first on
    PATH), one cell's job cancelled once it runs; and the same config run plainly."""
    tmp = tmp_path_factory.mktemp("slurm_sweep")
    setup = f"echo $SLURM_JOB_ID >> {tmp / 'setup.log'}"
    cfg = _two_cells(account="pbtest", qos="normal", sbatch={"comment": "pbtest-sweep"}, setup=[setup])
    run_sweep(cfg, tmp / "plain", progress=False)
    fake = tmp / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: error: accounting storage is disabled' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    out, victim, submitted, cancelled = tmp / "launched", "tiny__sft__n8__hard__s0", [], []

    def on_submit(task, job):
        submitted.append(task)
        if task == victim and not cancelled:
            threading.Thread(target=_cancel_when_running, args=(cluster, job, cancelled), daemon=True).start()

    path, wait = os.environ["PATH"], TrackedJob.results_timeout_s
    os.environ["PATH"], TrackedJob.results_timeout_s = f"{fake}:{path}", 2.0
    try:
        summary = launch_sweep(cfg, out, launcher="slurm", poll_s=0.5, on_submit=on_submit)
    finally:
        os.environ["PATH"], TrackedJob.results_timeout_s = path, wait
    return {"cfg": cfg, "out": out, "plain": tmp / "plain", "summary": summary, "submitted": submitted,
            "cancelled": cancelled, "setup_log": tmp / "setup.log"}  # fmt: skip


def _copy_run(run: dict, dest: Path, seeds: list[int]) -> tuple[Path, Path]:
    """The finished run folder copied to ``dest`` (no launcher files) with a config of more seeds."""
    shutil.copytree(run["out"], dest, ignore=shutil.ignore_patterns("launcher"))
    cfg_path = dest.parent / f"{dest.name}.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(run["cfg"], seeds=seeds))))
    return dest, cfg_path


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_a_slurm_sweep_equals_a_plain_run_after_a_cancelled_job(slurm_run, cluster):
    summary, out = slurm_run["summary"], slurm_run["out"]
    assert summary["failed"] == {} and summary["ran"] == 2 and failures(out) == {}
    (first,) = slurm_run["cancelled"]
    assert slurm_run["submitted"].count("tiny__sft__n8__hard__s0") == 2 and len(slurm_run["submitted"]) == 4
    ids = json.loads((out / "launcher" / "jobs.json").read_text())
    assert ids["tiny__sft__n8__hard__s0"][0] == first and len(ids["tiny__sft__n8__hard__s0"]) == 2
    assert "CANCELLED" in cluster.run("sacct", "-X", "-n", "-o", "State", "-j", first).stdout
    assert _results(out) == _results(slurm_run["plain"])
    # the cluster options reached every job: account, QOS, extra sbatch option, setup lines, the signal delay
    job = ids["tiny__base"][0]
    script = (out / "launcher" / job / f"{job}_submission.sh").read_text()
    for line in ("--account=pbtest", "--qos=normal", "--comment=pbtest-sweep", "--signal=USR2@30", "--time=5"):
        assert f"#SBATCH {line}\n" in script, line
    assert job in slurm_run["setup_log"].read_text().split()
    assert run_sweep(slurm_run["cfg"], out, progress=False)["ran"] == 0


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_a_cell_that_raises_reports_its_exception_job_and_log(slurm_run, tmp_path, capsys):
    out, cfg_path = _copy_run(slurm_run, tmp_path / "fail", seeds=[0, 1])
    (out / "adapters" / "tiny__sft__n8__easy__s1").write_text("not a folder: saving the adapter fails")
    only = ["--only", "seed=1", "--only", "bucket=easy", "--max-retries", "0", "--quiet"]
    assert main(["sweep", "--config", str(cfg_path), "--out", str(out), "--launcher", "slurm", "--update", *only]) == 1
    captured = capsys.readouterr()
    assert "0 cells run, 0 already finished of 1 selected cells (4 in the grid)" in captured.out
    (job,) = json.loads((out / "launcher" / "jobs.json").read_text())["tiny__sft__n8__easy__s1"]
    log = out / "launcher" / job / f"{job}_0_log.err"
    error = failures(out)["tiny__sft__n8__easy__s1"]["error"]
    assert re.fullmatch(rf"NotADirectoryError: \[Errno 20\] Not a directory: .* \(job {job}; log {re.escape(str(log))}\)", error)
    assert f"cell tiny__sft__n8__easy__s1 FAILED after 1 attempts: {error}" in captured.err
    assert "NotADirectoryError" in log.read_text()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_refused_submission_is_not_retried_and_leaves_nothing(slurm_run, cluster, tmp_path, capsys):
    out, cfg_path = _copy_run(slurm_run, tmp_path / "refused", seeds=[0, 3])
    before = set(cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split())
    args = ["sweep", "--config", str(cfg_path), "--out", str(out), "--launcher", "slurm", "--update", "--partition", "nope"]
    assert main([*args, "--only", "seed=3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("invalid partition specified: nope") == 1 and len(err.strip().splitlines()) == 1
    assert [p.name for p in (out / "launcher").rglob("*") if p.is_file()] == []  # no .pkl, no script, no jobs.json
    assert set(cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()) <= before  # no job submitted


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_a_launcher_killed_mid_run_is_replaced_by_one_that_adopts_its_job(slurm_run, cluster, tmp_path):
    out, cfg_path = _copy_run(slurm_run, tmp_path / "term", seeds=[0, 2])
    cell = "tiny__sft__n8__easy__s2"
    argv = ["sweep", "--config", str(cfg_path), "--out", str(out), "--launcher", "slurm", "--update",
            "--only", "seed=2", "--only", "bucket=easy", "--quiet"]  # fmt: skip
    cmd = [sys.executable, "-m", "pacbayes_sft.cli", *argv]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobs, job, deadline = out / "launcher" / "jobs.json", None, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        job = json.loads(jobs.read_text()).get(cell, [None])[0] if jobs.is_file() else None
        if job and _squeue_state(cluster, job) == "RUNNING":
            break
        time.sleep(0.2)
    assert job is not None and proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Slurm jobs keep running, and the same command adopts them" in err
    assert main(argv) == 0  # the same command again
    assert json.loads(jobs.read_text())[cell] == [job]  # adopted: never submitted twice
    names = cluster.run("sacct", "-X", "-n", "-P", "-o", "JobName", "-S", "now-1hour").stdout.split()
    assert names.count(f"pacbayes-sft-{cell}") == 1
    assert (out / "cells" / f"{cell}.json").is_file() and failures(out) == {}
