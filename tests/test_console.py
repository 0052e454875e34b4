"""What a person sees: a quiet run prints its results and little else."""

import subprocess
import sys
from pathlib import Path

QUICK = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "quick.yaml"


def _run(tmp_path, *flags):
    cmd = [sys.executable, "-m", "pacbayes_sft.cli", "sweep", "--config", str(QUICK), "--out", str(tmp_path), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_default_run_prints_one_line_per_cell_and_the_summary(tmp_path):
    out = _run(tmp_path / "a", "--report", "--only", "objective=sft", "--only", "n=8")  # three cells and a report
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) <= 21, out
    assert sum(x.startswith("cell ") for x in lines) == 3  # each cell's line once
    for noise in ("warnings.warn", "Warning", "train_runtime", "'loss'", "Loading weights", "Traceback"):
        assert noise not in out, noise
    assert "NOT a certified bound" in out


def test_quiet_prints_only_the_final_summary_and_verbose_shows_trainer_logs(tmp_path):
    part = ("--only", "objective=sft", "--only", "n=8", "--only", "bucket=easy")  # one cell: each prints the same
    quiet = _run(tmp_path / "q", "--quiet", *part)
    assert [x for x in quiet.splitlines() if x.strip()] == [x for x in quiet.splitlines() if x.startswith("sweep ")]
    assert len(quiet.splitlines()) == 1
    loud = _run(tmp_path / "v", "--verbose", *part)
    assert "train_runtime" in loud and len(loud.splitlines()) > 12


def test_a_cell_line_names_a_vacuous_bound_and_an_uninformative_total():
    from pacbayes_sft.sweep.record import CellRecord
    from pacbayes_sft.sweep.runner import cell_summary

    def line(upper, g_gen, tv):
        terms = {"point_train_risk": 0.0, "mc_risk_upper": upper, "g_gen": g_gen, "kl": 250.0, "tv": tv,
                 "total": upper + g_gen + tv}
        return cell_summary(CellRecord(id="c", base="b", objective="sft", rows=[], items={}, terms=terms, seconds=3.0))

    vacuous = line(0.993, 0.007, 0.72)
    assert "G_gen vacuous (bound = 1)" in vacuous and "G_gen 0.007" not in vacuous
    assert "0.993 (posterior, MC upper bound)" in vacuous and "above 1, it says nothing" in vacuous
    informative = line(0.10, 0.25, 0.30)
    assert "G_gen 0.250" in informative and "says nothing" not in informative
