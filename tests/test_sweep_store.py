"""The run folder's validity rule: a cell is kept exactly when the inputs it depends on are unchanged."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from pacbayes_sft.cli import main
from pacbayes_sft.report import collect
from pacbayes_sft.sweep import load_config, run_sweep
from pacbayes_sft.sweep.config import BaseSpec, TinyBase, cell_hash, config_hash
from pacbayes_sft.sweep.store import claim_folder, folder_state, valid_cells

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


def _two_bases():
    cfg = load_config(QUICK)
    a = BaseSpec("a", tiny=TinyBase(hidden=32, layers=1, heads=4, seed=0))
    b = BaseSpec("b", tiny=TinyBase(hidden=32, layers=1, heads=4, seed=1))
    return dataclasses.replace(cfg, bases=[a, b])


def _with_base_b_seed(cfg, seed: int):
    b = dataclasses.replace(cfg.bases[1], tiny=dataclasses.replace(cfg.bases[1].tiny, seed=seed))
    return dataclasses.replace(cfg, bases=[cfg.bases[0], b])


def test_cell_hash_ignores_the_other_axes_and_sees_the_inputs():
    cfg = _two_bases()
    h = cell_hash(cfg, "a")
    # Other bases, budgets, seeds and objectives do not enter a cell's result.
    for other in (
        _with_base_b_seed(cfg, 7),
        dataclasses.replace(cfg, budgets=[8, 16, 32]),
        dataclasses.replace(cfg, seeds=[0, 1, 2]),
        dataclasses.replace(cfg, objectives=["sft"]),
        dataclasses.replace(cfg, name="renamed", threads=1),
    ):
        assert cell_hash(other, "a") == h
    # Its own base, the training, the bound, the test set and the buckets do.
    a_reseeded = dataclasses.replace(cfg.bases[0], tiny=dataclasses.replace(cfg.bases[0].tiny, seed=3))
    for changed in (
        dataclasses.replace(cfg, bases=[a_reseeded, cfg.bases[1]]),
        dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, lr=0.01)),
        dataclasses.replace(cfg, bound=dataclasses.replace(cfg.bound, delta=0.01)),
        dataclasses.replace(cfg, test=dataclasses.replace(cfg.test, n_per_op=9)),
        dataclasses.replace(cfg, buckets={"easy": [1], "hard": [3]}),
    ):
        assert cell_hash(changed, "a") != h
    assert cell_hash(_with_base_b_seed(cfg, 7), "b") != cell_hash(cfg, "b")
    with pytest.raises(ValueError, match="base must be one of"):
        cell_hash(cfg, "c")


def _fake_cells(out: Path, cfg, *, legacy: bool) -> None:
    """Finished records for both bases, stamped as the sweep stamps them (legacy: config hash only)."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    for base in ("a", "b"):
        for n in (8, 16):
            cell = {"id": f"{base}__sft__n{n}", "base": base, "objective": "sft", "n": n}
            rec = {"cell": cell, "status": "done", "rows": [], "items": {}}
            rec["config_hash"] = config_hash(cfg)
            if not legacy:
                rec["cell_hash"] = cell_hash(cfg, base)
            (out / "cells" / f"{base}__sft__n{n}.json").write_text(json.dumps(rec))
    (out / "cells" / "a__sft__n32.json").write_text(json.dumps({"cell": {"base": "a"}, "status": "running"}))


@pytest.mark.parametrize("legacy", [False, True])
def test_update_keeps_exactly_the_cells_whose_inputs_did_not_change(tmp_path, legacy):
    cfg = _two_bases()
    claim_folder(tmp_path, cfg)
    if legacy:  # a sweep.json written before cell hashes were stored
        meta = json.loads((tmp_path / "sweep.json").read_text())
        (tmp_path / "sweep.json").write_text(json.dumps({k: meta[k] for k in ("config_hash", "config")}))
    _fake_cells(tmp_path, cfg, legacy=legacy)
    assert sorted(r.id for r in valid_cells(tmp_path)) == [
        "a__sft__n16",
        "a__sft__n8",
        "b__sft__n16",
        "b__sft__n8",
    ]
    new = dataclasses.replace(_with_base_b_seed(cfg, 5), budgets=[8, 16, 32])
    with pytest.raises(ValueError, match=r"another config .*: 2 of its 4 finished cells stay valid.*--update"):
        claim_folder(tmp_path, new)
    claim_folder(tmp_path, new, update=True)
    kept = sorted(r.id for r in valid_cells(tmp_path))
    assert kept == ["a__sft__n16", "a__sft__n8"]
    # Switching back restores base b's cells: the history remembers the config that made them.
    claim_folder(tmp_path, cfg, update=True)
    assert len(list(valid_cells(tmp_path))) == 4
    assert folder_state(tmp_path).expected("b") == cell_hash(cfg, "b")


def test_adding_a_budget_reruns_only_the_new_cells(tmp_path, capsys):
    raw = yaml.safe_load(QUICK.read_text())
    raw |= {"objectives": ["sft"], "buckets": {"easy": [1], "hard": [3]}, "budgets": [8]}
    raw["eval"]["generate"] = False
    first = run_sweep(raw, tmp_path, progress=False)
    before = {f.name: f.read_text() for f in (tmp_path / "cells").glob("*.json")}
    raw["budgets"] = [8, 12]
    with pytest.raises(ValueError, match="another config"):
        run_sweep(raw, tmp_path, progress=False)
    second = run_sweep(raw, tmp_path, update=True, progress=False)
    assert first["ran"] == 2 and second["ran"] == 2 and second["skipped"] == 2
    after = {f.name: f.read_text() for f in (tmp_path / "cells").glob("*.json")}
    assert all(after[k] == v for k, v in before.items())  # the finished cells were not touched
    df, _ = collect(tmp_path)
    assert sorted(df[df["objective"] == "sft"]["n"].unique()) == [8, 12]
    # The command line: back to the first config, which needs no new cell.
    raw["budgets"] = [8]
    cfg_path = tmp_path / "first.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    argv = ["sweep", "--config", str(cfg_path), "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    assert main([*argv, "--update"]) == 0
    assert "0 run now, 2 already finished" in capsys.readouterr().out


def test_cell_records_round_trip_and_old_files_still_load():
    """Every committed cell file (schema 1) loads as a CellRecord and writes back unchanged but for
    the schema key; a file that is not a record is refused, not half-read."""
    from pacbayes_sft.sweep.record import SCHEMA_VERSION, CellRecord

    files = sorted(Path(__file__).resolve().parent.parent.glob("docs/results/*/cells/*.json"))
    assert len(files) > 100
    for f in files:
        raw = json.loads(f.read_text())
        rec = CellRecord.from_dict(raw)
        assert rec.to_dict() == raw | {"schema": SCHEMA_VERSION}, f.name
        assert CellRecord.from_dict(rec.to_dict()) == rec
    with pytest.raises(ValueError, match="rows"):
        CellRecord.from_dict({"cell": {"id": "x", "base": "b", "objective": "sft"}, "status": "done"})
    with pytest.raises(ValueError, match="newer"):
        CellRecord.from_dict({"schema": SCHEMA_VERSION + 1})


def test_a_record_from_a_newer_toolkit_is_refused_not_overwritten(tmp_path):
    from pacbayes_sft.sweep.store import read_record

    path = tmp_path / "x.json"
    path.write_text(json.dumps({"cell": {"id": "x", "base": "b", "objective": "sft"}, "status": "done", "schema": 99}))
    with pytest.raises(ValueError, match="newer pacbayes_sft"):
        read_record(path)
