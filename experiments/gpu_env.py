"""The GPU check's environment: which of the toolkit's modules this Python lacks, the small
pure-Python ones installed from the wheels beside the script, and what the machine is.

    python experiments/gpu_env.py --wheels experiments/wheels --site DIR --out env.json

A GPU machine for the check has torch, transformers, peft, accelerate, pandas, scikit-learn and
seaborn (and what they pull in) but no network. What the toolkit or the tests need beyond that is
carried as wheels in ``experiments/wheels`` (each well under 1 MB, all py3-none-any): submitit and
cloudpickle (the sweep's launcher, imported by the CLI), pytest 8.3.5 with pluggy, iniconfig and
pytest-timeout (``pyproject.toml`` passes ``--timeout``; pytest 8.3 imports pygments only to
colour tracebacks, pytest 9 needs it), tomli and exceptiongroup (pytest on Python < 3.11) and
tabulate (a report's markdown tables). A missing module is installed by unpacking its wheel into
``--site`` (pure-Python wheels need nothing else; no pip, no network), which the caller puts on
PYTHONPATH. Exits 1 when a module no wheel provides is missing, and says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import zipfile
from pathlib import Path

PROVIDED = ("torch", "transformers", "peft", "accelerate", "pandas", "sklearn", "seaborn")
"""What the GPU machine's Python is assumed to have (the issue's list)."""

PULLED_IN = ("numpy", "scipy", "matplotlib", "yaml", "tqdm", "safetensors", "tokenizers", "packaging")
"""What the toolkit imports that the provided packages bring along (no wheel carried)."""

WHEELS = {
    "submitit": "submitit-*.whl",
    "cloudpickle": "cloudpickle-*.whl",
    "pytest": "pytest-8*.whl",
    "pluggy": "pluggy-*.whl",
    "iniconfig": "iniconfig-*.whl",
    "pytest_timeout": "pytest_timeout-*.whl",
    "tabulate": "tabulate-*.whl",
    "tomli": "tomli-*.whl",
    "exceptiongroup": "exceptiongroup-*.whl",
}
"""Module → the wheel in ``--wheels`` that provides it."""

ONLY_BEFORE_311 = ("tomli", "exceptiongroup")


def missing(modules) -> list[str]:
    """The ``modules`` this Python cannot import (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install(modules: list[str], wheels: Path, site: Path) -> list[str]:
    """Unpack the wheel of every module in ``modules`` into ``site``; the wheel files used."""
    used = []
    for mod in modules:
        if mod not in WHEELS:
            raise ValueError(f"modules: no wheel is carried for {mod!r}; carried: {sorted(WHEELS)}")
        found = sorted(wheels.glob(WHEELS[mod]))
        if not found:
            raise ValueError(f"wheels: {str(wheels)!r} holds no {WHEELS[mod]} for module {mod!r}")
        site.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(found[-1]) as zf:
            zf.extractall(site)
        used.append(found[-1].name)
    return used


def machine() -> dict:
    """Python, torch and the device, as the report names them."""
    info = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch
    except ImportError:
        return info | {"torch": None}
    info |= {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "device": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
        }
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheels", default=str(Path(__file__).resolve().parent / "wheels"))
    ap.add_argument("--site", required=True, help="folder to unpack missing wheels into (put it on PYTHONPATH)")
    ap.add_argument("--out", default="", help="JSON file to write")
    args = ap.parse_args(argv)
    wanted = [m for m in WHEELS if sys.version_info < (3, 11) or m not in ONLY_BEFORE_311]
    installed = install(missing(wanted), Path(args.wheels), Path(args.site))
    sys.path.insert(0, str(Path(args.site)))
    importlib.invalidate_caches()
    lacking = missing(PROVIDED + PULLED_IN) + missing(wanted)
    doc = machine() | {"installed_from_wheels": installed, "missing": lacking}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if lacking else 0


if __name__ == "__main__":
    raise SystemExit(main())
