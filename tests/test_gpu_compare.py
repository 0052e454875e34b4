"""experiments/gpu_compare.py: the GPU demo's records against the committed CPU ones, on small
record folders made from committed demo cells (identical, and changed in known ways)."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from pacbayes_sft.sweep.record import CellRecord

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "docs" / "results" / "demo" / "cells"
CELLS = ("base__base", "base__sft__n32__easy__s0", "base__sft__n128__medium__s0")

sys.path.insert(0, str(ROOT / "experiments"))

import gpu_compare as gc  # noqa: E402


def _folder(tmp: Path, name: str) -> Path:
    out = tmp / name / "cells"
    out.mkdir(parents=True)
    for cell in CELLS:
        shutil.copy(DEMO / f"{cell}.json", out / f"{cell}.json")
    return out


def _edit(folder: Path, cell: str, change) -> None:
    path = folder / f"{cell}.json"
    rec = CellRecord.from_dict(json.loads(path.read_text()))
    path.write_text(json.dumps(change(rec).to_dict()))


def _with_terms(rec: CellRecord, **new) -> CellRecord:
    return dataclasses.replace(rec, terms=rec.terms | new)


def _flip_answers(rec: CellRecord, k: int) -> CellRecord:
    answers = list(rec.items["answer_correct"])
    answers[:k] = [1.0 - a for a in answers[:k]]
    return dataclasses.replace(rec, items=rec.items | {"answer_correct": answers})


def test_identical_folders_are_identical(tmp_path):
    ref, got = _folder(tmp_path, "ref"), _folder(tmp_path, "got")
    rows = gc.compare_folders(ref.parent, got)  # a run folder or its cells/ folder
    assert [r.cell for r in rows] == sorted(CELLS)
    assert {r.verdict for r in rows} == {"identical"}
    assert gc.overall_verdict(rows) == "identical"
    cell = next(r for r in rows if r.cell == "base__sft__n128__medium__s0")
    assert cell.items_total == 320 and cell.items_differ == {m: 0 for m in gc.ITEM_METRICS}
    assert cell.sigma_ref == cell.sigma_got == pytest.approx(0.004271521825566249)


def test_small_changes_are_close_and_large_ones_differ(tmp_path):
    ref, got = _folder(tmp_path, "ref"), _folder(tmp_path, "got")
    mc = json.loads((DEMO / "base__sft__n32__easy__s0.json").read_text())["terms"]["mc_risk_upper"]
    # 2 flipped answers of 320 (0.6%) and an MC bound one unit of 1/64 higher: rounding-sized
    _edit(got, "base__sft__n32__easy__s0", lambda r: _with_terms(_flip_answers(r, 2), mc_risk_upper=mc + 1 / 64))
    # the KL doubled: a device bug, not rounding
    kl = json.loads((DEMO / "base__sft__n128__medium__s0.json").read_text())["terms"]["kl"]
    _edit(got, "base__sft__n128__medium__s0", lambda r: _with_terms(r, kl=2 * kl))
    rows = {r.cell: r for r in gc.compare_folders(ref, got)}
    close = rows["base__sft__n32__easy__s0"]
    assert close.verdict == "close"
    assert close.items_differ == {"token_error": 0, "exact_match": 0, "answer_correct": 2}
    assert close.worst_term == "mc_risk_upper" and close.worst_got == pytest.approx(mc + 1 / 64)
    far = rows["base__sft__n128__medium__s0"]
    assert far.verdict == "differs" and far.worst_term == "kl"
    assert far.worst_ref == pytest.approx(kl) and far.worst_got == pytest.approx(2 * kl)
    assert rows["base__base"].verdict == "identical"
    assert gc.overall_verdict(list(rows.values())) == "differs"
    table = gc.markdown_table(list(rows.values()))
    assert "| base__sft__n32__easy__s0 | close | 0 / 0 / 2 of 320 | mc_risk_upper: " in table
    assert f"kl: {kl:.6g} → {2 * kl:.6g}" in table


def test_items_beyond_the_share_and_another_sigma_differ(tmp_path):
    ref, got = _folder(tmp_path, "ref"), _folder(tmp_path, "got")
    _edit(got, "base__sft__n32__easy__s0", lambda r: _flip_answers(r, 20))  # 20 of 320 = 6% > 3%
    sigma = json.loads((DEMO / "base__sft__n128__medium__s0.json").read_text())["terms"]["sigma"]
    _edit(got, "base__sft__n128__medium__s0", lambda r: _with_terms(r, sigma=sigma * 2.5))  # another candidate
    rows = {r.cell: r for r in gc.compare_folders(ref, got)}
    assert rows["base__sft__n32__easy__s0"].verdict == "differs"
    assert rows["base__sft__n32__easy__s0"].items_differ["answer_correct"] == 20
    assert rows["base__sft__n128__medium__s0"].verdict == "differs"
    assert rows["base__sft__n128__medium__s0"].sigma_got == pytest.approx(2.5 * sigma)
    # looser tolerances accept both
    loose = gc.Tolerance(items=0.1, sigma_rtol=2.0)
    assert {r.verdict for r in gc.compare_folders(ref, got, loose)} == {"identical", "close"}


def test_missing_cells_and_the_command_line(tmp_path, capsys):
    ref, got = _folder(tmp_path, "ref"), _folder(tmp_path, "got")
    (got / "base__sft__n128__medium__s0.json").unlink()
    out = tmp_path / "cmp"
    assert gc.main([str(ref), str(got), "--out", str(out)]) == 1
    doc = json.loads((out / "compare.json").read_text())
    assert doc["verdict"] == "missing"
    assert [(c["cell"], c["verdict"]) for c in doc["cells"]] == [
        ("base__base", "identical"),
        ("base__sft__n128__medium__s0", "missing"),
        ("base__sft__n32__easy__s0", "identical"),
    ]
    assert doc["cells"][2]["worst_term"] == ""  # nothing differs, so no term is named
    assert "Verdict: **missing**" in (out / "compare.md").read_text()
    assert gc.main([str(ref), str(got), "--allow-missing"]) == 0
    assert "Verdict: **identical**" in capsys.readouterr().out
    # a partial run that ran nothing is still not a pass
    for p in got.glob("*.json"):
        p.unlink()
    assert gc.main([str(ref), str(got), "--allow-missing"]) == 1


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"Tolerance\.items"):
        gc.Tolerance(items=1.5)
    with pytest.raises(ValueError, match=r"Tolerance\.term_atol"):
        gc.Tolerance(term_atol=-1.0)
    with pytest.raises(ValueError, match="reference"):
        gc.compare_folders(tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no finished cell records"):
        gc.compare_folders(tmp_path / "empty", tmp_path)
    rec = CellRecord.from_dict(json.loads((DEMO / "base__base.json").read_text()))
    other = dataclasses.replace(rec, id="other")
    with pytest.raises(ValueError, match="got is the record of cell 'other'"):
        gc.compare_records(rec, other)
