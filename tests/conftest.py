"""Shared pytest hooks: tests marked ``cuda`` run only where torch sees a CUDA device.

The marker is registered in pyproject.toml (``[tool.pytest.ini_options] markers``). Without a
CUDA device each such test is skipped with the reason "needs a CUDA device", so the CPU suite
stays green and ``pytest -rs`` says what did not run; ``experiments/gpu_check.sh`` runs them on a
GPU machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

CUDA_REASON = "needs a CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return  # no torch import for runs that hold no CUDA test
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_REASON)
    for item in marked:
        item.add_marker(skip)


EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture
def experiment():
    """A loader of ``experiments/<name>.py`` as a module (the scripts are not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
