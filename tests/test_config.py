"""The one config system: strict from_dict with dotted key paths, and CLI options built from the
same fields (so defaults cannot drift)."""

from dataclasses import dataclass, fields

import pytest

from pacbayes_sft.certify import BoundConfig, TVConfig
from pacbayes_sft.cli import build_parser
from pacbayes_sft.config import from_dict, option, to_dict
from pacbayes_sft.sweep.config import SweepConfig
from pacbayes_sft.training.pretrain import PretrainConfig
from pacbayes_sft.training.sft import SFTConfig


@dataclass
class Inner:
    k: int = option(1, "an integer")
    names: list[str] = option(help="names", factory=list)


@dataclass
class Outer:
    inner: Inner = option(help="nested", factory=Inner)
    x: float | None = option(None, "optional number")
    table: dict[str, list[int]] = option(help="mapping", factory=dict)


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"inner": {"kk": 1}}, "unknown key inner.kk"),
        ({"inner": {"k": "one"}}, "inner.k must be an integer"),
        ({"inner": {"k": 1.5}}, "inner.k must be an integer"),
        ({"inner": {"names": "a"}}, "inner.names must be a list of strings"),
        ({"x": "big"}, "x must be a number"),
        ({"table": {"a": [1, "b"]}}, r"table.a\[1\] must be an integer"),
        ({"inner": 3}, "inner must be a mapping"),
    ],
)
def test_from_dict_refuses_with_the_dotted_path(raw, match):
    with pytest.raises(ValueError, match=match):
        from_dict(Outer, raw)


def test_from_dict_round_trip_and_defaults():
    o = from_dict(Outer, {"inner": {"k": 3.0, "names": ["a"]}, "table": {"t": [1, 2]}})
    assert o == Outer(Inner(3, ["a"]), None, {"t": [1, 2]}) and isinstance(o.inner.k, int)
    assert from_dict(Outer, to_dict(o)) == o
    assert from_dict(Outer, {}) == Outer()


def _subparser(name):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize(
    "command,cls,prefix",
    [
        ("finetune", SFTConfig, ""),
        ("pretrain", PretrainConfig, ""),
        ("certify", BoundConfig, ""),
        ("certify", TVConfig, "tv_"),
    ],
)
def test_cli_options_come_from_the_config_fields(command, cls, prefix):
    sub = _subparser(command)
    by_dest = {a.dest: a for a in sub._actions}
    for f in fields(cls):
        if f.name == "extra":
            continue
        action = by_dest[prefix + f.name]
        default = f.default_factory() if callable(f.default_factory) else f.default
        assert action.default == default, f.name
        assert f.metadata["help"] and f.metadata["help"].replace("%", "%%") in action.help


def test_pretrain_steps_default_no_longer_drifts():
    args = build_parser().parse_args(["pretrain", "--out", "x"])
    assert args.steps == PretrainConfig().steps


def test_sweep_sections_reuse_the_single_run_configs():
    cfg = from_dict(SweepConfig, {"sft": {"r": 4}, "bound": {"m": 2}, "tv": {"features": "structure"}})
    assert isinstance(cfg.sft, SFTConfig) and cfg.sft.r == 4
    assert isinstance(cfg.bound, BoundConfig) and cfg.bound.m == 2 and isinstance(cfg.tv, TVConfig)


def test_an_unset_data_path_does_not_fingerprint_the_working_directory(tmp_path, monkeypatch):
    """A dataset task without irt_responses hashes the same whatever the working directory holds."""
    from pacbayes_sft.sweep.config import _data_fingerprint

    monkeypatch.chdir(tmp_path)
    assert _data_fingerprint("") == ""
    (tmp_path / "noise.txt").write_text("anything")
    assert _data_fingerprint("") == ""
    assert _data_fingerprint(str(tmp_path / "noise.txt")) != str(tmp_path / "noise.txt")  # a real file is hashed
