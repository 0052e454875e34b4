"""A real one-node Slurm cluster for the tests: munge, MariaDB, slurmdbd, slurmctld and slurmd run
as root from config files in a temporary folder (``SLURM_CONF`` points the clients at it).

``make slurm`` installs the Debian packages where the machine is root with apt-get. Where the
cluster cannot be had (a package missing, not root, a daemon that does not come up)
:func:`running_cluster` skips the tests that use it and says why. Every daemon it started is
stopped, by its pid, when the session ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLUSTER = "pbtest"
PARTITION = "debug"
ACCOUNT = "pbtest"
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sacct", "sacctmgr", "scancel", "sinfo", "srun", "mariadb")
DB_PASS = "pbtest-slurm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None when it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the Slurm tests start slurmctld, slurmd and slurmdbd as root; not root here"
    absent = [p for p in DAEMONS + CLIENTS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing; `make slurm` installs it as root with apt-get)"
    return None


class SlurmCluster:
    """One node (this host, 2 CPUs) in partition ``debug``, with accounting through slurmdbd."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.ports = {k: _free_port() for k in ("db", "dbd", "ctld", "slurmd")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env["PATH"] = self.env.get("PATH", "") + ":/usr/sbin:/sbin"

    # ---------------------------------------------------------------------------------- config
    def _write_configs(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "db", "munge"):
            (r / d).mkdir(mode=0o700, exist_ok=True)
        auth = f"AuthType=auth/munge\nAuthInfo=socket={r / 'munge' / 'munge.sock'}\n"
        self.conf.write_text(
            f"ClusterName={CLUSTER}\nSlurmctldHost={self.node}(127.0.0.1)\n"
            f"SlurmctldPort={self.ports['ctld']}\nSlurmdPort={self.ports['slurmd']}\n"
            "SlurmUser=root\nSlurmdUser=root\n" + auth
            + f"StateSaveLocation={r / 'state'}\nSlurmdSpoolDir={r / 'spool'}\n"
            f"SlurmctldPidFile={r / 'slurmctld.pid'}\nSlurmdPidFile={r / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}\nSlurmdLogFile={r / 'log' / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\n"
            "SchedulerType=sched/backfill\nSchedulerParameters=sched_interval=2\nReturnToService=2\n"
            "SlurmdParameters=config_overrides\nKillWait=5\nMinJobAge=300\nInactiveLimit=0\n"
            "JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\n"
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={self.ports['dbd']}\nAccountingStoragePass={r / 'munge' / 'munge.sock'}\n"
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 State=UNKNOWN\n"
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        )
        dbd = r / "slurmdbd.conf"
        dbd.write_text(
            f"DbdHost={self.node}\nDbdAddr=127.0.0.1\nDbdPort={self.ports['dbd']}\nSlurmUser=root\n" + auth
            + f"PidFile={r / 'slurmdbd.pid'}\nLogFile={r / 'log' / 'slurmdbd.log'}\n"
            "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={self.ports['db']}\nStorageUser=slurm\nStoragePass={DB_PASS}\nStorageLoc=slurm_acct_db\n"
        )
        dbd.chmod(0o600)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

    # --------------------------------------------------------------------------------- daemons
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)

    def _wait(self, what: str, ok, timeout: float, name: str | None = None) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ok():
                return
            if name and self.procs[name].poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"{what} did not come up in {timeout:.0f} s; {self._tail(name)}")

    def _tail(self, name: str | None) -> str:
        if not name:
            return ""
        logs = [self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"]
        text = " | ".join(p.read_text(errors="replace").strip().splitlines()[-1] for p in logs if p.is_file() and p.read_text().strip())
        return f"{name} says: {text}" if text else f"{name} wrote no log"

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """A client command (sinfo, sacctmgr, ...) against this cluster."""
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, check=check, timeout=timeout)

    def _start_munge(self) -> None:
        m = self.root / "munge"
        self._spawn("munged", [shutil.which("munged", path=self.env["PATH"]), "--foreground", "--force",
                               f"--key-file={m / 'munge.key'}", f"--socket={m / 'munge.sock'}",
                               f"--pid-file={m / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])  # fmt: skip
        self._wait("munged", (m / "munge.sock").exists, 20, "munged")

    def _start_db(self) -> None:
        db = self.root / "db"
        common = ["--no-defaults", "--user=root", f"--datadir={db}"]
        self.run(shutil.which("mariadb-install-db", path=self.env["PATH"]), *common,
                 "--auth-root-authentication-method=normal", "--skip-test-db", timeout=180)  # fmt: skip
        sock = self.root / "db.sock"
        self._spawn("mariadbd", [shutil.which("mariadbd", path=self.env["PATH"]), *common, f"--socket={sock}",
                                 "--bind-address=127.0.0.1", f"--port={self.ports['db']}",
                                 f"--pid-file={self.root / 'mariadbd.pid'}", "--innodb-buffer-pool-size=32M"])  # fmt: skip
        sql = f"CREATE USER 'slurm'@'%' IDENTIFIED BY '{DB_PASS}'; GRANT ALL ON *.* TO 'slurm'@'%'; FLUSH PRIVILEGES;"
        self._wait("mariadbd", lambda: self.run("mariadb", "-S", str(sock), "-uroot", "-e", "SELECT 1", check=False).returncode == 0, 60, "mariadbd")
        self.run("mariadb", "-S", str(sock), "-uroot", "-e", sql)

    def _sacctmgr_ok(self) -> bool:
        return self.run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return out.returncode == 0 and f"{self.node} idle" in out.stdout

    def start(self) -> None:
        """Write the configs and bring every daemon up; RuntimeError says which one failed."""
        self._write_configs()
        self._start_munge()
        self._start_db()
        self._spawn("slurmdbd", [shutil.which("slurmdbd", path=self.env["PATH"]), "-D"])
        self._wait("slurmdbd", self._sacctmgr_ok, 60, "slurmdbd")
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"Cluster={CLUSTER}")
        self.run("sacctmgr", "-i", "add", "user", "root", f"Account={ACCOUNT}", f"Cluster={CLUSTER}")
        self._spawn("slurmctld", [shutil.which("slurmctld", path=self.env["PATH"]), "-D", "-i"])
        self._spawn("slurmd", [shutil.which("slurmd", path=self.env["PATH"]), "-D", "-N", self.node])
        self._wait("slurmctld and slurmd (node idle in sinfo)", self._node_idle, 60, "slurmd")

    def stop(self) -> None:
        """Cancel the jobs left on this cluster, then stop every daemon it started, by pid, the last
        started first."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if jobs:
                self.run("scancel", *jobs, check=False)
                time.sleep(2)
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()


def running_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """For a fixture: the running cluster, with ``SLURM_CONF`` (and /usr/sbin on PATH)
    set while it runs; a skip, saying why, where it cannot be started."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm", numbered=True))
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        pytest.skip(f"the test Slurm cluster did not start: {str(exc).strip().splitlines()[-1][:300]}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ.update(SLURM_CONF=cluster.env["SLURM_CONF"], PATH=cluster.env["PATH"])
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.stop()
