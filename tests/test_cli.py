"""Command line: tables, JSON, and one-line errors with exit status 2."""

import argparse
import json

import pytest

from pacbayes_sft.cli import build_parser, main


def test_bound_table_and_json(capsys):
    assert main(["bound", "--emp-risk", "0.1", "--kl", "50", "--n", "5000", "--tv", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "seeger" in out and "not a certified bound" in out.lower()
    # with a certified TV every term is certified, and the line says so
    assert main(["bound", "--emp-risk", "0.1", "--kl", "50", "--n", "5000", "--tv", "0.1", "--tv-certified"]) == 0
    assert "the total is a certified bound" in capsys.readouterr().out
    assert main(["bound", "--emp-risk", "0.1", "--kl", "50", "--n", "5000", "--tv", "0.1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"seeger", "maurer", "catoni", "lambda", "quad"}
    seeger = next(r for r in rows if r["method"] == "seeger")
    maurer = next(r for r in rows if r["method"] == "maurer")
    assert seeger["total"] <= maurer["total"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["bound", "--emp-risk", "1.5", "--kl", "1", "--n", "10", "--tv", "0"], "emp_risk"),
        (["bound", "--emp-risk", "0.1", "--kl", "-1", "--n", "10", "--tv", "0"], "kl"),
        (["bound", "--emp-risk", "0.1", "--kl", "1", "--n", "0", "--tv", "0"], "n must"),
        (["bound", "--emp-risk", "0.1", "--kl", "1", "--n", "10", "--tv", "2"], "tv"),
        (["bound", "--emp-risk", "0.1", "--kl", "1", "--n", "10", "--tv", "0", "--delta", "1"], "delta"),
        (["bound", "--emp-risk", "nan", "--kl", "1", "--n", "10", "--tv", "0"], "emp_risk"),
        (["bound", "--emp-risk", "0.1", "--kl", "1", "--n", "10", "--tv", "0", "--catoni-c", "0"], "catoni-c"),
        (["bound", "--kl", "1"], "required"),
        (["kl", "--adapter", "/definitely/missing", "--sigma", "0.1"], "does not exist"),
        (["kl", "--adapter", ".", "--sigma", "-1"], "sigma"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_demo_runs_small(tmp_path, capsys):
    assert main(["adapter-demo", "--out", str(tmp_path), "--n", "64", "--steps", "5", "--m", "2"]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert len(doc["grid"]) == 4
    assert doc["two_gap"]["certified"] is False and doc["certified"] is False
    assert abs(doc["delta"]["ledger"]["spent"] - 0.05) < 1e-12
    # the histogram TV has no interval, so no delta is spent on one
    assert all("tv" not in e["term"] for e in doc["delta"]["ledger"]["entries"])
    for row in doc["grid"]:
        assert row["seeger"] <= row["maurer"] + 1e-12
        assert row["mc_risk_upper"] >= row["mc_mean_risk"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "two-gap bound" in capsys.readouterr().out


def test_every_verb_prints_its_help(capsys):
    """Each verb's --help renders (argparse %-formats help text: a bare '%' once broke pretrain)."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for verb in verbs:
        with pytest.raises(SystemExit) as exc:
            main([verb, "--help"])
        assert exc.value.code == 0, verb
        assert "usage:" in capsys.readouterr().out
