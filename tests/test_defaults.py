"""One definition per default: the API, the CLI and a sweep cell use the same settings."""

import dataclasses
from pathlib import Path

import pytest

from pacbayes_sft import defaults
from pacbayes_sft.certify import BoundConfig, EvalConfig, TVConfig
from pacbayes_sft.certify.config import PriorConfig
from pacbayes_sft.cli import build_parser, main
from pacbayes_sft.config import options_from_args
from pacbayes_sft.sweep import SweepConfig, load_config, run_sweep
from pacbayes_sft.sweep import runner as sweep_runner

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


def _fields(obj, skip=()):
    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in skip}


def test_configs_read_the_shared_defaults():
    b, t, e = BoundConfig(), TVConfig(), EvalConfig()
    assert (b.delta, b.loss, b.catoni_c) == (defaults.DELTA, defaults.LOSS, defaults.CATONI_C)
    assert (t.permutations, t.max_per_side) == (defaults.TV_PERMUTATIONS, defaults.TV_MAX_PER_SIDE)
    assert (e.max_new_tokens, e.batch_size) == (defaults.MAX_NEW_TOKENS, defaults.BATCH_SIZE)


def test_certify_command_line_and_a_sweep_cell_default_to_the_same_settings():
    args = build_parser().parse_args(["certify", "--base", "b", "--adapter", "a", "--train", "t", "--test", "s"])
    sweep = SweepConfig()
    assert options_from_args(BoundConfig, args) == sweep.bound == BoundConfig()
    assert options_from_args(TVConfig, args, prefix="tv_") == sweep.tv == TVConfig()
    cli_eval = options_from_args(EvalConfig, args, prefix="eval_")
    assert _fields(cli_eval, ("generate",)) == _fields(sweep.eval, ("generate",)) == _fields(EvalConfig(), ("generate",))


def test_certify_cell_and_the_sweep_call_certify_with_the_same_settings(tmp_path, monkeypatch):
    """`certify --run DIR --cell ID` recomputes exactly what the sweep computed for that cell."""
    calls = []
    real = sweep_runner.certify

    def recording(*args, **kw):
        calls.append((args[2], args[3], kw))
        return real(*args, **kw)

    monkeypatch.setattr(sweep_runner, "certify", recording)
    cfg = dataclasses.replace(load_config(QUICK), objectives=["sft"], budgets=[8], seeds=[0])
    # the data-free recipe calls certify(); a two-stage cell is recomputed in tests/test_two_stage.py
    cfg = dataclasses.replace(cfg, buckets={"easy": cfg.buckets["easy"]}, prior=PriorConfig(kind="pretrained"))
    run_sweep(cfg, tmp_path, progress=False)
    (cell_id,) = [p.stem for p in (tmp_path / "cells").glob("*.json") if "__base" not in p.stem]
    assert main(["certify", "--run", str(tmp_path), "--cell", cell_id, "--out", str(tmp_path / "c.json"), "--quiet"]) == 0
    (train_a, test_a, kw_a), (train_b, test_b, kw_b) = calls
    assert [e.prompt for e in train_a] == [e.prompt for e in train_b]
    assert [e.prompt for e in test_a] == [e.prompt for e in test_b]
    for key in ("bound", "tv", "evaluation", "seed", "init"):
        assert kw_a[key] == kw_b[key], key
    assert kw_a["bound"] == cfg.bound and kw_a["tv"] == cfg.tv and kw_a["evaluation"] == cfg.eval
    # the same judge: it scores the same answers the same way
    probe = test_a[0]
    assert kw_a["judge"](probe, probe.response) == kw_b["judge"](probe, probe.response) is True


def test_a_cell_id_not_in_the_run_is_one_line_and_exit_2(tmp_path, capsys):
    run_sweep(dataclasses.replace(load_config(QUICK), objectives=["sft"], budgets=[8], seeds=[0],
                                  buckets={"easy": [1]}), tmp_path, progress=False)
    assert main(["certify", "--run", str(tmp_path), "--cell", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell 'nope' is not in the sweep" in err[0]


@pytest.mark.parametrize("name", ["delta", "loss", "max_new_tokens", "batch_size"])
def test_no_literal_default_is_restated_in_the_library(name):
    """A signature default equal to a shared default must read it from ``defaults``."""
    import ast

    value = getattr(defaults, name.upper())
    offenders = []
    for path in (ROOT / "pacbayes_sft").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):] + node.args.kwonlyargs
                vals = node.args.defaults + node.args.kw_defaults
                offenders += [
                    f"{path.name}:{node.name}"
                    for a, v in zip(args, vals)
                    if a.arg == name and isinstance(v, ast.Constant) and v.value == value
                ]
    assert offenders == []
