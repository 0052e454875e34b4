"""Versions of the libraries a result depends on, recorded in every file the toolkit writes."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "transformers", "peft", "scikit-learn", "numpy", "scipy")


def library_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """``{"python": ..., library: version}`` for the installed distributions ("absent" if not installed)."""
    out = {"python": platform.python_version()}
    for lib in libraries:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out
