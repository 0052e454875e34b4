"""The add and remove rules every run-time registry of the toolkit shares (PAC-Bayes bounds,
difficulty measures, launcher backends, label-free estimators): a built-in entry is never replaced
or removed, a taken name is replaced only when asked, and every refusal is a ValueError naming the
argument. This module imports nothing of the package: every layer may use it."""

from __future__ import annotations

from collections.abc import Collection, Mapping, MutableMapping
from typing import Any


def check_free(
    registry: Mapping[str, Any], name: str, *, built_in: Collection[str], kind: str, replace: bool, arg: str = "name"
) -> None:
    """ValueError (naming ``arg``) when ``name`` is a built-in entry of ``registry``, or is taken
    and ``replace`` is False; ``kind`` says what the registry holds ("bound", "launcher", ...)."""
    if name in built_in or (name in registry and not replace):
        taken = f"a built-in {kind}" if name in built_in else "already registered (pass replace=True)"
        raise ValueError(f"{arg}: the {kind} {name!r} is {taken}")


def pop_registered(
    registry: MutableMapping[str, Any], name: str, *, built_in: Collection[str], kind: str, arg: str = "name"
) -> Any:
    """Remove and return the entry ``name`` of ``registry``; ValueError (naming ``arg``) for a
    built-in or an unknown name, the unknown one with the names that are known."""
    if name in built_in:
        raise ValueError(f"{arg}: the built-in {kind} {name!r} cannot be removed")
    if name not in registry:
        raise ValueError(f"{arg}: no {kind} {name!r} is registered (known: {', '.join(registry)})")
    return registry.pop(name)
