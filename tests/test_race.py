"""The race on a run folder (racing) and its verb, end to end on a tiny two-bucket sweep."""

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pacbayes_sft.certify.config import item_losses
from pacbayes_sft.cli import main
from pacbayes_sft.data import igsm
from pacbayes_sft.racing import parse_group, race_group, race_groups, race_summaries
from pacbayes_sft.racing.fresh_items import SEED_OFFSET, fresh_items, item_seed, op_counts
from pacbayes_sft.report import build_report
from pacbayes_sft.stats import CONFIDENCES
from pacbayes_sft.sweep import SweepConfig, load_config, run_sweep

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"
RACE = {"epsilon": 0.001, "round_items": 24, "max_items": 72}  # ε small: this tiny race ends at the cap


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("race")
    raw = yaml.safe_load(QUICK.read_text())
    raw |= {"objectives": ["sft"], "budgets": [8], "buckets": {"easy": [1], "hard": [3]}}
    raw["eval"]["generate"] = False  # the loss is token_error: no generation, seconds not minutes
    raw["threads"] = 1  # tiny matrices: more threads only contend with other processes
    if "prior" in {f.name for f in dataclasses.fields(SweepConfig)}:
        raw["prior"] = {"kind": "pretrained"}  # the data-free recipe: an adapter is its seed's SFT run
    out = tmp / "run"
    run_sweep(raw, out, progress=False)
    return out


def _record_losses(out: Path, cell_id: str) -> np.ndarray:
    rec = json.loads((out / "cells" / f"{cell_id}.json").read_text())
    return item_losses(rec["loss"], rec["items"])


def test_fresh_rounds_draw_new_test_problems_from_the_test_mixture(run):
    cfg = load_config(QUICK)
    committed = {p.seed for p in igsm.test_set(cfg.test.ops, cfg.test.n_per_op, seed=cfg.test.seed)}
    assert item_seed(cfg, 1) == cfg.test.seed + SEED_OFFSET + 1
    for scheme in ("stratified", "mixed"):
        items = fresh_items(cfg, 1, 300, scheme)
        assert all(p.split == "test" for p in items) and not committed & {p.seed for p in items}
        assert not {p.seed for p in items} & {p.seed for p in fresh_items(cfg, 2, 300, scheme)}
        ops = np.array([p.op for p in items])
        assert set(ops) == set(cfg.test.ops)
        assert all(abs((ops == o).mean() - 1 / 3) < 0.1 for o in cfg.test.ops)  # about uniform over the test ops
    # stratified: exactly the test set's proportions when the round size allows, else one apart
    assert [p.op for p in fresh_items(cfg, 1, 300)] == [o for o in cfg.test.ops for _ in range(100)]
    assert op_counts(10, [1, 2, 3]) == {1: 4, 2: 3, 3: 3} and sum(op_counts(201, list(range(8))).values()) == 201
    assert not {p.seed for p in fresh_items(cfg, 1, 300)} & {p.seed for p in fresh_items(cfg, 1, 300, "mixed")}
    with pytest.raises(ValueError, match="scheme"):
        fresh_items(cfg, 1, 3, "uniform")


def test_a_race_spends_fresh_rounds_resumes_and_reports(run, capsys):
    doc = race_group(run, "tiny/sft/8", **RACE)
    path = run / "race" / "tiny__sft__n8.json"
    assert json.loads(path.read_text()) == doc and doc["status"] == "done"
    res = doc["result"]
    assert res["reason"] == "cap" and res["items_used"] == {"easy": 72, "hard": 72} and res["rounds"] == 3
    assert doc["settings"]["confidence"] == res["confidence"] == "cmeb"  # the defaults for a new race
    assert doc["settings"]["items"] == "stratified"
    assert [r["n_items"] for r in doc["rounds"]] == [24, 24, 24] and doc["cell_seeds"] == [0]
    assert doc["item_seeds"] == [item_seed(load_config(QUICK), 1), item_seed(load_config(QUICK), 2)]
    # round 0 is the cells' own per-item losses
    r0 = json.loads((run / "race" / "tiny__sft__n8" / "round_000.json").read_text())
    for b in ("easy", "hard"):
        assert np.allclose(r0["losses"][b], _record_losses(run, f"tiny__sft__n8__{b}__s0"))
    # a fresh round is the adapter's loss on the fresh problems, recomputed here independently
    from pacbayes_sft.adapters import attach_adapter
    from pacbayes_sft.data.igsm_verify import igsm_judge
    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.training.evaluate import evaluate_items
    from pacbayes_sft.training.models import load_causal_lm

    r2 = json.loads((run / "race" / "tiny__sft__n8" / "round_002.json").read_text())
    model = attach_adapter(load_causal_lm(run / "bases" / "tiny"), run / "adapters" / "tiny__sft__n8__hard__s0")
    problems = fresh_items(load_config(QUICK), 2, 24)
    slices = {op: [p for p in problems if p.op == op] for op in dict.fromkeys(p.op for p in problems)}  # test-set order
    items = evaluate_items(model, load_tokenizer(run / "bases" / "tiny"), slices, judge=igsm_judge(7), generate=False)
    assert np.allclose(r2["losses"]["hard"], items["token_error"], atol=1e-6)
    # a rerun recomputes nothing; more items continue the race where it stopped
    mtime = (run / "race" / "tiny__sft__n8" / "round_001.json").stat().st_mtime
    assert race_group(run, "tiny/sft/8", **RACE) == doc
    more = race_group(run, "tiny/sft/8", **(RACE | {"max_items": 96}))
    assert more["result"]["items_used"]["easy"] == 96 and len(more["rounds"]) == 4
    assert (run / "race" / "tiny__sft__n8" / "round_001.json").stat().st_mtime == mtime
    assert more["rounds"][:3] == [r | {"stop": None} if r["stop"] == "cap" else r for r in doc["rounds"]]
    with pytest.raises(ValueError, match="epsilon"):
        race_group(run, "tiny/sft/8", **(RACE | {"epsilon": 0.05}))
    # the report shows the race beside the bootstrap
    build_report(run)
    md = (run / "report.md").read_text()
    assert re.search(r"open: .* \(ε 0.001; 96 items; 1 seed\(s\); [0-9,]+ s\)", md)  # one cell: answer and basis
    assert "race_items" not in md and "items_needed (80% power)" in md
    assert "1 budget(s) raced, 0 ended with a single best bucket and 0 in an ε-tie" in md
    # the verb prints the finished race without recomputing it
    assert main(["race", "--run", str(run), "--quiet", *_flags(RACE | {"max_items": 96})]) == 0
    assert "tiny/sft/8: not decided within 96 items" in capsys.readouterr().out


def _flags(kw: dict) -> list[str]:
    return [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def test_a_race_file_from_before_the_confidence_setting_replays_with_the_union_bound(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("race"))
    doc = race_group(out, "tiny/sft/8", confidence="bernstein", **RACE)
    assert doc["settings"]["confidence"] == doc["result"]["confidence"] == "bernstein"
    path, last = out / "race" / "tiny__sft__n8.json", out / "race" / "tiny__sft__n8" / "round_002.json"
    old = json.loads(path.read_text())
    del old["settings"]["confidence"], old["result"]["confidence"], old["settings"]["items"]  # as written before
    path.write_text(json.dumps(old))
    assert race_summaries(out)[0]["result"].confidence == "bernstein"
    mtime = last.stat().st_mtime
    again = race_group(out, "tiny/sft/8", **RACE)  # replayed with its own method, nothing recomputed
    assert again == doc | {"settings": doc["settings"] | {"items": "mixed"}} and last.stat().st_mtime == mtime
    # continued past its cap, it draws its fresh problems as it did before the setting existed
    more = race_group(out, "tiny/sft/8", **(RACE | {"max_items": 96}))
    assert more["settings"]["items"] == "mixed" and len(more["rounds"]) == 4
    with pytest.raises(ValueError, match="confidence 'bernstein' -> 'betting'"):
        race_group(out, "tiny/sft/8", confidence="betting", **RACE)


def test_a_missing_adapter_is_retrained_from_its_seed(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("race"))
    shutil.rmtree(out / "adapters" / "tiny__sft__n8__easy__s0")
    doc = race_group(out, "tiny/sft/8", **(RACE | {"max_items": 48}))
    assert (out / "adapters" / "tiny__sft__n8__easy__s0" / "adapter_config.json").is_file()
    # training is deterministic given the seed: the retrained adapter scores round 0 as recorded
    assert doc["retrained"] == {"tiny__sft__n8__easy__s0": 0}


def test_a_missing_two_stage_adapter_is_named_not_retrained(run, tmp_path, monkeypatch):
    import pacbayes_sft.racing.contenders as contenders

    out = tmp_path / "copy"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("race"))
    shutil.rmtree(out / "adapters" / "tiny__sft__n8__hard__s0")
    monkeypatch.setattr(contenders, "retrainable", lambda cfg: False)  # as under the data-dependent prior
    with pytest.raises(ValueError, match="tiny__sft__n8__hard__s0 have no adapter"):
        race_group(out, "tiny/sft/8", **RACE)
    assert not (out / "race" / "tiny__sft__n8" / "round_000.json").exists()


def test_bad_input(run, tmp_path, capsys):
    assert race_groups(run) == [parse_group("tiny/sft/8")]
    with pytest.raises(ValueError, match="not in the sweep"):
        race_group(run, "tiny/dft/8")
    with pytest.raises(ValueError, match="round_items"):
        race_group(run, "tiny/sft/8", round_items=0)
    with pytest.raises(ValueError, match=r"confidence must be one of \('cmeb', 'betting', 'bernstein'\)"):
        race_group(run, "tiny/sft/8", confidence="stitched")
    with pytest.raises(ValueError, match="BASE/OBJECTIVE/N"):
        parse_group("tiny/sft")
    meta = json.loads((run / "sweep.json").read_text())
    byo = yaml.safe_load((ROOT / "experiments" / "configs" / "byo_example.yaml").read_text())
    meta["config"]["task"] = byo["task"] | {
        "train_path": str(ROOT / byo["task"]["train_path"]),
        "test_path": str(ROOT / byo["task"]["test_path"]),
    }
    (tmp_path / "sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="mixture: task kind 'dataset' has only its test file"):
        race_group(tmp_path, "tiny/sft/8", mixture=("hard", {1: 1.0}))
    with pytest.raises(ValueError, match=r"mixture must be \(name, \{op: weight\}\) or None"):
        race_group(run, "tiny/sft/8", mixture="hard")
    for argv, needle in (
        (["race", "--run", str(tmp_path / "missing")], "is not a folder"),
        (["race", "--run", str(run), "--group", "tiny/sft/999"], "not in the sweep"),
        (["race", "--run", str(run), "--group", "tiny"], "BASE/OBJECTIVE/N"),
        (["race", "--run", str(run), "--epsilon", "-1"], "epsilon"),
        (["race", "--run", str(run), "--confidence", "stitched"], "--confidence"),
        (["race", "--run", str(run), "--max-seeds", "3", "--min-seeds", "1"], "--min-seeds must be 0 (one look)"),
        (["race", "--run", str(run), "--min-seeds", "2"], "lie in [2, max_seeds = 0]"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_the_replay_and_the_race_table_read_a_raced_folder(run, tmp_path, capsys, experiment):
    """experiments/race_replay.py replays the group on its recorded losses (both methods, every
    cap), and experiments/race_table.py lists the race that ran with the replay's prediction."""
    doc = race_group(run, "tiny/sft/8", **RACE)  # already run above: read back, not recomputed
    csv_path = tmp_path / "replay.csv"
    replay = experiment("race_replay")
    assert replay.main(["--run", str(run), "--caps", "48", "72", "--reps", "3", "--epsilon", "0.001",
                        "--round-items", "24", "--out", str(csv_path)]) == 0  # fmt: skip
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["cap"]) for r in rows} == {(m, c) for m in CONFIDENCES for c in ("48", "72")}
    assert all(float(r["median_items"]) <= int(r["cap"]) and r["round0_items"] == "24" for r in rows)
    table = experiment("race_table").rows(run, csv_path)
    (row,) = [r for r in table if r["group"] == "tiny/sft/8"]
    assert row["items"] == doc["result"]["items_used"]["easy"] and row["method"] == "cmeb"
    assert row["decided"] is False and row["predicted_items"] == 72.0  # ε this small: the cap, in every replay
    assert experiment("race_table").main([str(run)]) == 0 and "tiny/sft/8" in capsys.readouterr().out
