"""The GPU check's helpers that need no GPU: the timing tables (experiments/gpu_profile.py), the
scaled configuration (experiments/gpu_scaled.py) and the wheel installer (experiments/gpu_env.py)."""

import json
import sys
from pathlib import Path

import pytest

from pacbayes_sft.sweep import normalise_config
from pacbayes_sft.sweep.cells import cells_of

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import gpu_env  # noqa: E402
import gpu_profile  # noqa: E402
import gpu_scaled  # noqa: E402

DEMO = ROOT / "docs" / "results" / "demo"


def _profile(device: str, threads: int, phases: dict, wall: float) -> dict:
    return {"device": device, "threads": threads, "phases": phases, "wall_seconds": wall}


def test_phase_table_sets_profiles_side_by_side():
    cpu = _profile("cpu", 2, {"training": 6.0, "certificate: TV proxy": 1.0}, 16.0)
    gpu = _profile("NVIDIA H100", 0, {"training": 1.5, "stochastic test risk": 0.5}, 4.0)
    table = gpu_profile.phase_table([cpu, gpu]).splitlines()
    assert table[0] == "| phase | cpu (2 threads) s | NVIDIA H100 s | speed-up |"
    assert "| training | 6.00 | 1.50 | 4.0× |" in table
    assert "| certificate: TV proxy | 1.00 | — | — |" in table  # a phase one profile lacks
    assert "| stochastic test risk | — | 0.50 | — |" in table
    assert table[-1] == "| cell wall time | 16.00 | 4.00 | 4.0× |"
    with pytest.raises(ValueError, match="profiles"):
        gpu_profile.phase_table([])


def test_stage_table_of_a_run_against_itself_is_one_everywhere():
    table = gpu_profile.stage_table(DEMO, DEMO / "cells").splitlines()
    rows = [r for r in table[2:] if r.startswith("| base__sft__")]
    stages = json.loads(next((DEMO / "cells").glob("base__sft__*.json")).read_text())["training"]["stage_seconds"]
    assert len(stages) == 5 and len(rows) == 9 * (len(stages) + 1)  # 9 cells x (5 recorded stages + the cell)
    assert all(r.endswith("| 1.0× |") for r in table[2:])
    assert table[-1].startswith("| all cells both ran | **sum** |")
    with pytest.raises(ValueError, match="reference"):
        gpu_profile.stage_table(DEMO / "nowhere", DEMO)


def test_scaled_config_is_the_paper_config_cut_down(tmp_path):
    paper = normalise_config(gpu_scaled.yaml.safe_load(gpu_scaled.PAPER.read_text()))
    for size in ("paper", "tiny"):
        cfg = normalise_config(gpu_scaled.scaled_config(size, tmp_path / "base"))
        assert [b.path for b in cfg.bases] == [str(tmp_path / "base")]
        assert set(cfg.buckets) <= set(paper.buckets) and all(cfg.buckets[k] == paper.buckets[k] for k in cfg.buckets)
        assert (cfg.sft, cfg.bound, cfg.tv, cfg.eval) == (paper.sft, paper.bound, paper.tv, paper.eval)
        assert cfg.label_free.source == 0 and cfg.seeds == [0] and cfg.objectives == ["sft"]
        assert len(cells_of(cfg)) == len(gpu_scaled.SIZES[size]["buckets"])
    assert normalise_config(gpu_scaled.scaled_config("paper", tmp_path)).test.n_per_op == 50
    with pytest.raises(ValueError, match="size"):
        gpu_scaled.scaled_config("huge", tmp_path)


def test_wheels_are_small_pure_python_and_unpack(tmp_path):
    wheels = ROOT / "experiments" / "wheels"
    for pattern in gpu_env.WHEELS.values():
        (found,) = wheels.glob(pattern)
        assert found.name.endswith("-py3-none-any.whl") and found.stat().st_size < 1_000_000
    used = gpu_env.install(["tabulate", "iniconfig"], wheels, tmp_path / "site")
    assert sorted(used) == sorted(p.name for p in wheels.glob("*.whl") if p.name.startswith(("tabulate", "iniconfig")))
    assert (tmp_path / "site" / "tabulate").is_dir() and (tmp_path / "site" / "iniconfig").is_dir()
    assert gpu_env.missing(["json", "no_such_module_here"]) == ["no_such_module_here"]
    with pytest.raises(ValueError, match="no wheel is carried for 'numpy'"):
        gpu_env.install(["numpy"], wheels, tmp_path / "site")
