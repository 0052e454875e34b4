"""One config system: dataclasses with help text, a strict generic ``from_dict``, and CLI options
built from the same fields.

Every configurable thing in the toolkit (SFT hyperparameters, pretraining, the bound, the TV
proxy, the sweep) is a dataclass whose fields carry their help text (``option``). From that one
description:

- :func:`from_dict` builds an instance from parsed YAML/JSON, refusing unknown keys and wrong
  types with the dotted key path (``config: bound.m must be an integer, got 'two'``);
- :func:`to_dict` writes it back (JSON-ready);
- :func:`add_options` / :func:`options_from_args` give an argparse parser one ``--flag`` per
  field with the same type, default and help, so the command line cannot drift from the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, Union

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, choices: Iterable[Any] | None = None, factory: Any = None):
    """A dataclass field with help text (and optional choices) for configs and the CLI. Choices
    given as a mapping (a registry such as ``sweep.difficulty.MEASURES``) stay live: a name
    registered later is a choice too."""
    keep = choices is None or isinstance(choices, Mapping)  # none, or a live registry
    meta = {"help": help, "choices": choices if keep else tuple(choices)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _describe(tp: Any) -> str:
    opt, inner = _is_optional(tp)
    if opt:
        return f"{_describe(inner)} or null"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return f"a list of {_plural(typing.get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return f"a mapping to {_plural(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _plural(tp: Any) -> str:
    names = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    return names.get(tp) or (
        f"lists of {_plural(typing.get_args(tp)[0])}" if typing.get_origin(tp) is list else "mappings"
    )


def _scalar(value: Any, tp: type, where: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        return value  # an unconstrained type (e.g. Any)
    if not ok:
        raise ValueError(f"config: {where} must be {_describe(tp)}, got {value!r}")
    return tp(value)


def _convert(value: Any, tp: Any, where: str) -> Any:
    opt, tp = _is_optional(tp)
    if value is None:
        if opt:
            return None
        raise ValueError(f"config: {where} must be {_describe(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config: {where} must be {_describe(tp)}, got {value!r}")
        item = typing.get_args(tp)[0]
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"config: {where} must be {_describe(tp)}, got {value!r}")
        key_t, val_t = typing.get_args(tp)
        # JSON keys are strings: an integer key written by to_dict reads back as its digits
        keys = {k: int(k) if key_t is int and isinstance(k, str) and k.lstrip("-").isdigit() else k for k in value}
        return {_scalar(keys[k], key_t, f"{where} key"): _convert(v, val_t, f"{where}.{k}") for k, v in value.items()}
    return _scalar(value, tp, where)


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and wrong types are refused
    with the dotted path of the key. Missing keys take the field defaults; the dataclass's own
    ``__post_init__`` checks values."""
    name = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ValueError(f"config: {name} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in known:
            raise ValueError(f"config: unknown key {_join(where, key)} (known: {', '.join(sorted(known))})")
    kwargs = {k: _convert(v, hints[k], _join(where, k)) for k, v in data.items()}
    for k, f in known.items():
        choices = f.metadata.get("choices")
        if k in kwargs and choices and kwargs[k] not in choices:
            raise ValueError(f"config: {_join(where, k)} must be one of {list(choices)}, got {kwargs[k]!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ValueError(f"config: {name}: {exc}") from None
    except ValueError as exc:
        raise ValueError(_located(str(exc), where, known)) from None


def _located(msg: str, where: str, known: Mapping[str, Any]) -> str:
    """Prefix a dataclass's own validation message with the key path (``bound.m must be ...``)."""
    msg = msg.removeprefix("config: ")
    first = msg.split(" ", 1)[0]
    if where and first in known:
        return f"config: {where}.{msg}"
    return f"config: {where}: {msg}" if where else f"config: {msg}"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def to_dict(obj: Any) -> dict:
    """The JSON-ready mapping of a config dataclass (tuples become lists)."""
    return _jsonable(dataclasses.asdict(obj))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# Command-line options from the same fields


def _cli_type(tp: Any):
    opt, tp = _is_optional(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]

        def parse_list(text: str, item=item):
            try:
                return [item(x) for x in text.split(",") if x.strip()]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected comma-separated {_plural(item)}, got {text!r}") from None

        return parse_list
    if opt:

        def parse_optional(text: str, tp=tp):
            return None if text.lower() in ("", "none", "null") else tp(text)

        return parse_optional
    return tp


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    prefix: str = "",
    unset_help: str = "",
    **defaults: Any,
) -> None:
    """One ``--{prefix}field-name`` option per field of dataclass ``cls`` (type, default and help
    from the field); ``defaults`` override field defaults for this command, and ``unset_help``
    says what an option left at None means (e.g. "the config's value")."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.name in skip or not f.init or dataclasses.is_dataclass(_is_optional(tp)[1]):
            continue
        if typing.get_origin(_is_optional(tp)[1]) in (dict, Mapping):
            continue
        default = defaults.get(f.name, f.default if f.default is not _MISSING else f.default_factory())
        flag = "--" + (prefix + f.name).replace("_", "-")
        dest = (prefix + f.name).replace("-", "_")
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if tp is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        if default is None and unset_help:
            shown = unset_help
        parser.add_argument(
            flag,
            dest=dest,
            type=_cli_type(tp),
            default=default,
            choices=f.metadata.get("choices"),
            help=f"{help_text} (default: {shown})",
        )


def options_from_args(cls: type[T], args: argparse.Namespace, *, prefix: str = "", **overrides: Any) -> T:
    """Build ``cls`` from the options :func:`add_options` added (plus ``overrides``)."""
    dest = {f.name: (prefix + f.name).replace("-", "_") for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: getattr(args, d) for k, d in dest.items() if hasattr(args, d)}
    hints = typing.get_type_hints(cls)
    for k, v in kwargs.items():
        if typing.get_origin(_is_optional(hints[k])[1]) is tuple and isinstance(v, list):
            kwargs[k] = tuple(v)
    return cls(**(kwargs | overrides))
