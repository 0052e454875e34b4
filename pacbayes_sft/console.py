"""What a run prints: one verbosity setting for the toolkit and the libraries under it.

- ``quiet``: only results and errors; no progress bars.
- ``default``: the toolkit's own lines (through :mod:`logging`, written above any progress bar),
  one bar per long loop (nested bars clear themselves); library warnings, transformers' own
  progress bars and the Trainer's per-step dictionaries are off.
- ``verbose``: everything the libraries say, the Trainer's log dictionaries included.
"""

from __future__ import annotations

import logging
import warnings

from tqdm.auto import tqdm

LEVELS = ("quiet", "default", "verbose")
_LIBRARIES = r"(transformers|peft|accelerate|torch|sklearn|huggingface_hub|safetensors)(\.|$)"
_state = {"level": "default"}
log = logging.getLogger("pacbayes_sft")


class _TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write`` so that a line never breaks a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure(level: str = "default") -> None:
    """Set the verbosity of the toolkit, transformers, and Python warnings from libraries."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    _state["level"] = level
    if not any(isinstance(h, _TqdmHandler) for h in log.handlers):
        handler = _TqdmHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.WARNING if level == "quiet" else logging.DEBUG if level == "verbose" else logging.INFO)
    _configure_libraries(level)


def _configure_libraries(level: str) -> None:
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        hf_logging = None
    if level == "verbose":
        warnings.filterwarnings("default", module=_LIBRARIES)
        if hf_logging is not None:
            hf_logging.set_verbosity_info()
            hf_logging.enable_progress_bar()
        return
    warnings.filterwarnings("ignore", module=_LIBRARIES)
    if hf_logging is not None:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def show_progress() -> bool:
    """Whether long loops draw progress bars."""
    return _state["level"] != "quiet"


def verbose() -> bool:
    return _state["level"] == "verbose"
