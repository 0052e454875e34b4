"""A sweep's run folder: which finished cells are valid under the folder's current config.

A cell's result depends on its own base, the task, the buckets, the test set and the training,
bound, TV and evaluation settings, and not on which other bases, budgets, seeds or objectives
the grid holds. :func:`~pacbayes_sft.sweep_config.cell_hash` hashes exactly that, and every cell
record carries it. So a study can change one base, or add budgets, and rerun only the cells
whose inputs changed.

``sweep.json`` holds the current config, its hash, its per-base cell hashes and the same for
every earlier config the folder was switched from (``history``). Cells written before records
carried a cell hash are judged by the config they were made with: their ``config_hash`` names
it in the history, whose cell hash for their base must equal the current one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from .config import SweepConfig, cell_hash, config_dict, config_hash, normalise_config
from .record import SCHEMA_VERSION, CellRecord

__all__ = [
    "FolderState",
    "atomic_write",
    "claim_folder",
    "clear_failure",
    "failures",
    "folder_config",
    "folder_state",
    "read_record",
    "valid_cells",
    "write_failure",
]


def atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_record(path: Path) -> CellRecord | None:
    """A cell file's record if it is a finished cell, else None (missing, unreadable, partial,
    or not a cell record at all)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("status") != "done":
        return None
    if raw.get("schema", 1) > SCHEMA_VERSION:  # never overwrite what a newer toolkit wrote
        raise ValueError(f"{str(path)!r} was written by a newer pacbayes_sft (schema {raw['schema']}); upgrade to read it")
    try:
        return CellRecord.from_dict(raw)
    except ValueError:
        return None


class FolderState:
    """The current config's hash and per-base cell hashes, and the cell hashes of the configs the
    folder came from. A record written under this state carries :meth:`stamp`."""

    def __init__(
        self,
        config_hash: str,
        cell_hashes: dict[str, str],
        history: dict[str, dict[str, str]],
        config: dict | None = None,
    ):
        self.config_hash = config_hash
        self.config = config  # the current config as sweep.json stores it (None if it holds none)
        self.cell_hashes = dict(cell_hashes)  # base name -> cell hash under the current config
        self.history = dict(history)  # config hash -> {base name -> cell hash} (current included)

    def stamp(self, base: str) -> dict[str, str]:
        """The hashes a record of ``base`` carries: the whole config's and the cell's own."""
        return {"config_hash": self.config_hash, "cell_hash": self.cell_hashes[base]}

    def expected(self, base: str) -> str | None:
        return self.cell_hashes.get(base)

    def accepts(self, rec: CellRecord) -> bool:
        """Whether a finished record is a result of the current config."""
        want = self.cell_hashes.get(rec.base)
        if want is None:
            return False
        have = rec.cell_hash or self.history.get(rec.config_hash, {}).get(rec.base)
        return have == want


def _hashes(cfg: SweepConfig) -> dict[str, str]:
    return {b.name: cell_hash(cfg, b.name) for b in cfg.bases}


def _read_meta(out: Path) -> dict | None:
    path = out / "sweep.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _legacy_hashes(meta: dict) -> dict[str, str]:
    """Cell hashes of a sweep.json written before they were stored: recomputed from its config,
    but only while that config still hashes as it did (its base weights are unchanged)."""
    if "cell_hashes" in meta:
        return meta["cell_hashes"]
    try:
        cfg = normalise_config(stored_config(meta["config"]))
    except (KeyError, ValueError, OSError):
        return {}
    return _hashes(cfg) if config_hash(cfg) == meta.get("config_hash") else {}


def _history(meta: dict | None) -> dict[str, dict[str, str]]:
    if not meta:
        return {}
    hist = dict(meta.get("history", {}))
    if meta.get("config_hash"):
        hist[meta["config_hash"]] = _legacy_hashes(meta)
    return hist


def folder_state(out: str | Path) -> FolderState:
    """The validity rule of a run folder, from its ``sweep.json``."""
    meta = _read_meta(Path(out))
    if meta is None:
        raise ValueError(f"{str(out)!r} is not a sweep directory (no readable sweep.json)")
    hist = _history(meta)
    return FolderState(meta["config_hash"], hist.get(meta["config_hash"], {}), hist, meta.get("config"))


def folder_config(out: str | Path) -> tuple[SweepConfig, FolderState]:
    """The config of a run folder and its validity rule, from one read of its ``sweep.json``."""
    state = folder_state(out)
    if state.config is None:
        raise ValueError(f"{str(out)!r} is not a sweep directory (its sweep.json holds no config)")
    return normalise_config(stored_config(state.config)), state


def stored_config(config: dict) -> dict:
    """A config as a run folder stored it. Folders from before the ``prior`` section ran with the
    data-free prior and collected no label-free answers, which is what they read as (the new
    defaults are the data-dependent prior and collecting); a data-dependent prior stored without
    ``search`` chose σ_p ascending, the only search there was."""
    old = {"prior": {"kind": "pretrained"}, "label_free": {"source": 0}}
    config = {k: v for k, v in old.items() if k not in config} | config
    prior = config["prior"]
    if isinstance(prior, dict) and prior.get("kind", "data") == "data" and "search" not in prior:
        config = config | {"prior": prior | {"search": "ascending"}}
    return config


def _finished(out: Path) -> Iterator[CellRecord]:
    """Every finished cell record of the folder, valid or not, in file-name order."""
    for f in sorted((out / "cells").glob("*.json")):
        rec = read_record(f)
        if rec is not None:
            yield rec


def valid_cells(out: str | Path, state: FolderState | None = None) -> Iterator[CellRecord]:
    """Every finished cell record valid under the folder's current config, in file-name order."""
    out = Path(out)
    state = state or folder_state(out)
    return (rec for rec in _finished(out) if state.accepts(rec))


def write_failure(out: Path, cell_id: str, *, attempts: int, error: str) -> None:
    """Record that a cell failed every attempt (``failed/<cell id>.json``): ``pacbayes-sft sweep``
    and ``pacbayes-sft report`` list it with its error until a later run finishes the cell."""
    (out / "failed").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "failed" / f"{cell_id}.json", json.dumps({"id": cell_id, "attempts": attempts, "error": error}))


def clear_failure(out: Path, cell_id: str) -> None:
    """Forget a failure once its cell has finished."""
    (out / "failed" / f"{cell_id}.json").unlink(missing_ok=True)


def failures(out: str | Path) -> dict[str, dict]:
    """The failure records of a run folder ({cell id: {id, attempts, error}}) whose cell has not
    finished since."""
    out = Path(out)
    return {
        f.stem: json.loads(f.read_text())
        for f in sorted((out / "failed").glob("*.json"))
        if read_record(out / "cells" / f.name) is None
    }


def claim_folder(out: Path, cfg: SweepConfig, *, update: bool = False) -> FolderState:
    """Write ``sweep.json`` for ``cfg`` and return the folder's validity rule under it.

    A folder made by another config is refused unless ``update`` is set: then it switches to
    ``cfg``, keeps every cell whose inputs did not change and reruns the rest."""
    meta, chash = _read_meta(out), config_hash(cfg)
    current = _hashes(cfg)
    state = FolderState(chash, current, _history(meta) | {chash: current}, config_dict(cfg))
    prev = (meta or {}).get("config_hash")
    if prev not in (None, chash) and not update:
        accepted = [state.accepts(rec) for rec in _finished(out)]
        keep, total = sum(accepted), len(accepted)
        raise ValueError(
            f"out_dir {str(out)!r} holds results of another config (hash {prev}, this config {chash}): "
            f"{keep} of its {total} finished cells stay valid under this config and the rest would be rerun; "
            "pass update=True (--update) to switch the folder to this config, or use a new output directory"
        )
    record = {"config_hash": chash, "config": state.config, "cell_hashes": state.cell_hashes}
    record["history"] = {h: v for h, v in state.history.items() if h != chash}
    atomic_write(out / "sweep.json", json.dumps(record, indent=2, default=str))
    return state
