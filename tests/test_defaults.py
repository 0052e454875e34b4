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
    for key in ("bound", "tv", "evaluation", "prior"):
        assert kw_a.get(key) == kw_b.get(key), key
    sa, sb = kw_a["settings"], kw_b["settings"]  # the settings object: seed, initial factors, judge
    for key in ("seed", "init"):
        assert getattr(sa, key) == getattr(sb, key), key
    assert kw_a["bound"] == cfg.bound and kw_a["tv"] == cfg.tv and kw_a["evaluation"] == cfg.eval
    # the same judge: it scores the same answers the same way
    probe = test_a[0]
    assert sa.judge(probe, probe.response) == sb.judge(probe, probe.response) is True


def test_a_cell_id_not_in_the_run_is_one_line_and_exit_2(tmp_path, capsys):
    run_sweep(dataclasses.replace(load_config(QUICK), objectives=["sft"], budgets=[8], seeds=[0],
                                  buckets={"easy": [1]}), tmp_path, progress=False)
    assert main(["certify", "--run", str(tmp_path), "--cell", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell 'nope' is not in the sweep" in err[0]


RACE = {
    "epsilon": defaults.RACE_EPSILON,
    "level": defaults.RACE_LEVEL,
    "round_items": defaults.RACE_ROUND_ITEMS,
    "max_items": defaults.RACE_MAX_ITEMS,
}


def test_the_race_verb_the_race_and_the_allocation_default_to_the_same_settings():
    """`pacbayes-sft race`, race_group, PairedRace and run_race share ε, the level, the round size
    and the cap, and a race built with no arguments races with them."""
    import inspect

    from pacbayes_sft.racing import race_group
    from pacbayes_sft.stats import PairedRace, run_race

    args = build_parser().parse_args(["race", "--run", "r"])
    assert {k: getattr(args, k) for k in RACE} == RACE
    for fn in (race_group, PairedRace, run_race):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in RACE} == RACE, fn.__name__
    assert inspect.signature(run_race).parameters["first_items"].default == defaults.RACE_ROUND_ITEMS
    race = PairedRace()
    assert {k: getattr(race, k) for k in RACE} == RACE
    # the defaults are a valid race: a level and an ε in (0, 1), and a cap that holds rounds
    assert 0 < defaults.RACE_EPSILON < 1 and 0 < defaults.RACE_LEVEL < 1
    assert defaults.RACE_MAX_ITEMS >= 2 * defaults.RACE_ROUND_ITEMS


@pytest.mark.parametrize(
    "name,shared",
    [
        ("delta", "DELTA"),
        ("loss", "LOSS"),
        ("max_new_tokens", "MAX_NEW_TOKENS"),
        ("batch_size", "BATCH_SIZE"),
        ("round_items", "RACE_ROUND_ITEMS"),
        ("max_items", "RACE_MAX_ITEMS"),
        ("n_boot", "LABEL_FREE_N_BOOT"),
        ("n_boot", "LABEL_FREE_REPORT_N_BOOT"),
        ("n_boot", "BEST_BUCKET_N_BOOT"),
    ],
)
def test_no_literal_default_is_restated_in_the_library(name, shared):
    """A signature default equal to a shared default must read it from ``defaults``."""
    import ast

    value = getattr(defaults, shared)
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


def test_every_bootstrap_and_estimator_default_reads_the_shared_one():
    """The label-free estimators (API, settings object, CLI, sweep, reweighting), the report's
    label-free table and the best-bucket bootstrap each take their resample count from ``defaults``."""
    import inspect

    from pacbayes_sft.cli import build_parser
    from pacbayes_sft.estimators.label_free import ATC, DoC, EstimatorSettings, seed_disagreement
    from pacbayes_sft.estimators.target_risk import DensityRatioWeights, SliceWeights
    from pacbayes_sft.report.label_free import estimates_table
    from pacbayes_sft.report.optimum import bootstrap_optimum
    from pacbayes_sft.report.uncertainty import bootstrap_best
    from pacbayes_sft.sweep.label_free import cell_estimates

    def default(fn, name="n_boot"):
        return inspect.signature(fn).parameters[name].default

    estimators = [ATC.__init__, DoC.__init__, seed_disagreement, cell_estimates, DensityRatioWeights.risk, SliceWeights.risk]
    assert {default(f) for f in estimators} == {defaults.LABEL_FREE_N_BOOT}
    assert EstimatorSettings().n_boot == defaults.LABEL_FREE_N_BOOT
    args = build_parser().parse_args(["estimate-risk", "--base", "b", "--adapter", "a", "--prompts", "p"])
    assert args.n_boot == defaults.LABEL_FREE_N_BOOT
    assert default(estimates_table) == defaults.LABEL_FREE_REPORT_N_BOOT
    assert {default(bootstrap_best), default(bootstrap_optimum)} == {defaults.BEST_BUCKET_N_BOOT}
