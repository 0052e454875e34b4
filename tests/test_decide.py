"""The decide stage of a sweep (`sweep --decide`, `racing.decide`): every group raced to a decision
with the config's `decide` settings, one line each, kept apart from the bootstrap's count."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from pacbayes_sft.cli import main
from pacbayes_sft.racing.decide import decide_sweep
from pacbayes_sft.racing.seed_stage import seed_group
from pacbayes_sft.sweep import SweepConfig, load_config
from pacbayes_sft.sweep.config import cell_hash
from pacbayes_sft.sweep.decide_config import DecideConfig

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    raw = yaml.safe_load(QUICK.read_text())
    raw |= {"objectives": ["sft"], "budgets": [8], "buckets": {"easy": [1], "hard": [3]}, "threads": 1}
    raw["eval"]["generate"] = False  # the loss is token_error: no generation, seconds not minutes
    raw["prior"] = {"kind": "pretrained"}
    raw["decide"] = {"epsilon": 0.5, "level": 0.9, "round_items": 24, "max_items": 48}
    path = tmp_path_factory.mktemp("decide_cfg") / "decide.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sweep_decide_races_every_group_and_says_what_is_certified(config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sweep", "--config", str(config), "--out", str(out), "--decide"]) == 0
    printed = capsys.readouterr().out
    # ε = 0.5 on a loss in [0, 1] with 24 items: the two buckets are an ε-tie or one is best, never open
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("tiny/sft/8: ")]
    assert "race: certified at 90% on fresh items" in line and "not decided" not in line
    assert "decided by race (certified, fresh items): 1 of 1 groups" in printed
    doc = json.loads((out / "race" / "tiny__sft__n8.json").read_text())
    assert doc["settings"]["epsilon"] == 0.5 and doc["settings"]["max_items"] == 48
    # a second run replays the finished race: nothing is recomputed, the answer is the same
    again = decide_sweep(out)
    assert again[0].result.answer == tuple(doc["result"]["answer"])
    assert json.loads((out / "race" / "tiny__sft__n8.json").read_text())["seconds"] == doc["seconds"]


def test_a_group_with_missing_cells_is_reported_not_raced(config, tmp_path, capsys):
    out = tmp_path / "part"
    assert main(["sweep", "--config", str(config), "--out", str(out), "--only", "bucket=easy"]) == 0
    (d,) = decide_sweep(out)
    assert d.result is None and "not decided" in d.line() and not (out / "race").exists()


def test_decide_settings_stay_out_of_the_cell_hash():
    cfg = load_config(QUICK)
    other = dataclasses.replace(cfg, decide=DecideConfig(epsilon=0.1, max_items=400, auto=True))
    assert cell_hash(cfg, "tiny") == cell_hash(other, "tiny")


@pytest.mark.parametrize(
    "decide,match",
    [
        ({"epsilon": 0.0}, r"decide\.epsilon must lie in \(0, 1\)"),
        ({"epsilon": 1.0}, r"decide\.epsilon must lie in \(0, 1\)"),
        ({"level": 1.5}, r"decide\.level must lie in \(0, 1\)"),
        ({"round_items": 200, "max_items": 100}, r"decide\.max_items \(100\) is below one round"),
        ({"max_seeds": 3, "min_seeds": 4}, r"decide\.min_seeds must be 0 \(one look\) or lie in \[2, max_seeds = 3\]"),
        ({"min_seeds": -1}, r"decide\.min_seeds must be an integer >= 0"),
    ],
)
def test_bad_decide_settings_are_one_line_and_exit_2(config, tmp_path, capsys, decide, match):
    raw = yaml.safe_load(config.read_text())
    raw["decide"] = decide
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "never"
    assert main(["sweep", "--config", str(bad), "--out", str(out), "--decide"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not out.exists()


def test_decide_refuses_a_folder_that_is_not_a_sweep_and_settings_of_another_type(tmp_path):
    with pytest.raises(ValueError, match="not a sweep's output folder"):
        decide_sweep(tmp_path)
    with pytest.raises(ValueError, match="settings must be a DecideConfig"):
        fake = tmp_path / "fake"
        shutil.copytree(ROOT / "docs" / "results" / "demo", fake, ignore=shutil.ignore_patterns("report*", "*.png"))
        decide_sweep(fake, settings={"epsilon": 0.1})
    assert SweepConfig().decide == DecideConfig()


def test_decide_over_seeds_and_another_mixture(config, tmp_path, capsys, monkeypatch, experiment):
    """Two seeds, up to three, a look at each count: the race's answer (certified, these adapters) and the answer over
    seeds (an estimate) side by side; a skewed mixture races on fresh items only. The tiny models'
    seeds agree exactly, so the first look is made open to make the stage train a third seed."""
    from pacbayes_sft.racing import seed_stage

    real = seed_stage.decide_over_seeds

    def open_at_two(losses, **kw):
        d = real(losses, **kw)
        return dataclasses.replace(d, reason="open") if max(d.seeds.values()) == 2 else d

    monkeypatch.setattr(seed_stage, "decide_over_seeds", open_at_two)
    raw = yaml.safe_load(config.read_text())
    raw["seeds"] = [0, 1]
    raw["decide"] |= {"max_seeds": 3, "min_seeds": 2, "mixtures": {"hard": {1: 1, 3: 3}}, "epsilon": 0.02}
    cfg_path = tmp_path / "seeds.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["sweep", "--config", str(cfg_path), "--out", str(out), "--decide"]) == 0
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if ln.startswith("tiny/sft/8")]
    assert len(lines) == 2 and lines[1].startswith("tiny/sft/8@hard: ")
    assert all("over seeds (" in ln and "an estimate" in ln for ln in lines)
    doc = json.loads((out / "race" / "tiny__sft__n8.json").read_text())
    seeds = doc["seeds"]
    assert seeds["status"] == "done" and seeds["certified"] is False and seeds["looks"] == 2
    # every round file keeps each seed's losses, and their mean is the race's loss
    rnd = json.loads((out / "race" / "tiny__sft__n8" / "round_000.json").read_text())
    for b, per_seed in rnd["seed_losses"].items():
        assert sorted(per_seed) == ["0", "1"]
        mean = [sum(v) / 2 for v in zip(*per_seed.values())]
        assert mean == pytest.approx(rnd["losses"][b], abs=1e-6)
    # a third seed was trained for every bucket in contention at the first look (both), never a fourth
    assert seeds["extra_seeds"] == {"easy": [2], "hard": [2]} and seeds["seeds"] == {"easy": 3, "hard": 3}
    for b in ("easy", "hard"):
        assert (out / "adapters" / f"tiny__sft__n8__{b}__s2" / "adapter_config.json").is_file()
        extra = json.loads((out / "race" / "tiny__sft__n8" / f"seed_tiny__sft__n8__{b}__s2.json").read_text())
        assert [len(v) for v in extra["rounds"].values()] == [len(rnd["losses"][b]), 24]
    # a rerun replays the looks on the seeds already trained: nothing is trained again, same answer
    files = sorted((out / "race" / "tiny__sft__n8").glob("seed_*.json"))
    decide_sweep(out)
    assert json.loads((out / "race" / "tiny__sft__n8.json").read_text())["seeds"] == seeds
    assert sorted((out / "race" / "tiny__sft__n8").glob("seed_*.json")) == files
    with pytest.raises(ValueError, match=r"looked at \[2, 3\] seeds a bucket, not \[3\] .*its looks split δ"):
        seed_group(out, "tiny/sft/8", max_seeds=3)  # another look schedule would spend δ again
    race_file = out / "race" / "tiny__sft__n8.json"
    race_file.write_text(json.dumps(json.loads(race_file.read_text()) | {"cell_seeds": [0]}))
    with pytest.raises(ValueError, match=r"was run on seeds \[0\], and the group now has seeds \[0, 1\]"):
        seed_group(out, "tiny/sft/8", max_seeds=3, min_seeds=2)  # its losses would be paired with the wrong seeds
    from pacbayes_sft.report.decisions import decision_counts, decision_table

    table = decision_table(out)  # the report's table: one row per race, the test mixture first
    assert list(table["mixture"]) == ["test", "hard"] and list(table["seeds"]) == ["3/3", "3/3"]
    assert decision_counts(table).startswith("decided by race (certified for the trained adapters): ")
    mix = json.loads((out / "race" / "tiny__sft__n8@hard.json").read_text())
    assert mix["settings"]["weights"] == {"1": 1.0, "3": 3.0} and mix["item_seeds"][0] is not None
    # the study script: the same table into decisions.csv, and two folders' totals added up
    study = experiment("decide_study")
    written, summary = study.study(out)
    assert (out / "decisions.csv").read_text().count("\n") == len(table) + 1 and written.equals(table)
    assert summary["counts"]["test"]["races"] == summary["counts"]["hard"]["races"] == 1
    both = study.combined([written, written], [summary, summary])
    assert both["races"] == 4 and both["counts"]["hard"]["races"] == 2
    decided = [a for a in table["over_seeds"] if not a.startswith(("open", "not computed"))]
    assert both["decided_over_seeds"] == 2 * len(decided)
    assert both["compute"]["total_h"] == pytest.approx(2 * summary["compute"]["total_h"], abs=1e-3)
    assert both["decided_over_seeds_span"]["base"] == (["tiny"] if decided else [])
