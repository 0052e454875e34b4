"""The sweep's configuration: nested dataclasses read strictly from YAML or JSON.

A config file is parsed as data (never executed) and built with
:func:`pacbayes_sft.config.from_dict`: an unknown key or a wrong type is refused with its dotted
path (``config: bound.m must be an integer, got 'x'``). The ``sft`` section is the same
:class:`~pacbayes_sft.training.sft.SFTConfig` that ``pacbayes-sft finetune`` uses, and ``bound``
and ``tv`` are the same :class:`~pacbayes_sft.certify.BoundConfig` and
:class:`~pacbayes_sft.certify.TVConfig` that ``pacbayes-sft certify`` uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..certify.config import BoundConfig, EvalConfig, PriorConfig, TVConfig
from ..config import from_dict, option, to_dict
from ..training.config import OBJECTIVES, SFTConfig
from .decide_config import DecideConfig
from .difficulty import MEASURES
from .resources import Resources

SHIPPED_BASE = Path(__file__).resolve().parent.parent / "assets" / "base_igsm"
CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "experiments" / "configs"


TASKS = ("igsm", "dataset")


@dataclass
class TaskConfig:
    """Where the data come from: the synthetic iGSM task, or your own (prompt, response, answer) files.

    For ``kind: dataset`` every example gets a difficulty (a column, or the reference response's
    length in tokens of the first base's tokenizer) and a bin 1..k (quantiles of the training
    pool, or fixed ``edges``). Buckets name bins (``{easy: [1], hard: [4]}``) and test slices are
    bins; ``test.ops`` lists the bins to test on and ``test.n_per_op`` caps each slice.
    """

    kind: str = option("igsm", "Task: igsm (generated problems) or dataset (your files).", choices=TASKS)
    modulus: int = option(7, "igsm: arithmetic modulus of the problems (a prime).")
    train_path: str = option("", "dataset: training pool file (.jsonl, .csv, .parquet) or saved datasets folder.")
    test_path: str = option("", "dataset: test file, same formats.")
    prompt_column: str = option("prompt", "dataset: column of the prompt.")
    response_column: str = option("response", "dataset: column of the reference response (the SFT target).")
    answer_column: str = option("answer", "dataset: column of the final answer the scorer compares with.")
    difficulty: str = option(
        "cot_length",
        "dataset: difficulty measure: a column, cot_length (response tokens), base_nll (the first base's "
        "per-token NLL of the response, nats), base_pass_rate (1 - its pass rate over 4 samples at T = 1), "
        "or irt (fitted to irt_responses).",
        choices=MEASURES,  # the registry of sweep/difficulty.py, live: register_measure adds a choice
    )
    difficulty_column: str = option("difficulty", "dataset: the difficulty column when difficulty = column.")
    irt_responses: str = option(
        "", "dataset, difficulty irt: a (subject, item, correct) table (.csv/.jsonl/.parquet) of models' answers."
    )
    item_column: str = option("prompt", "dataset, difficulty irt: the data column that names items in irt_responses.")
    bins: int = option(4, "dataset: number of quantile bins of the difficulty (ignored with edges).")
    edges: list[float] | None = option(None, "dataset: fixed increasing bin edges instead of quantiles.")
    scorer: str = option(
        defaults.SCORER, "dataset: how a generated answer is judged: final_answer, exact_match or module:function."
    )
    chat_template: bool = option(False, "dataset: wrap each prompt in the tokenizer's chat template.")

    def __post_init__(self) -> None:
        if self.kind == "dataset" and not (self.train_path and self.test_path):
            raise ValueError("task.kind 'dataset' needs task.train_path and task.test_path")
        if self.difficulty == "irt" and not self.irt_responses:
            raise ValueError("task.difficulty 'irt' needs task.irt_responses (a subject, item, correct table)")
        if not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(f"task.bins must be an integer >= 1, got {self.bins!r}")


@dataclass
class TinyBase:
    """A randomly initialised base built from config (for tests and smoke runs)."""

    arch: str = option("llama", "Architecture: llama, qwen2 or gpt2.", choices=("llama", "qwen2", "gpt2"))
    hidden: int = option(32, "Model width.")
    layers: int = option(2, "Transformer blocks.")
    heads: int = option(4, "Attention heads.")
    seed: int = option(0, "Seed of the initialisation.")


@dataclass
class BaseSpec:
    """One base model: a checkpoint directory (``@shipped`` = the shipped base) or a tiny one."""

    name: str = option(help="Name of the base in cell ids and reports.")
    path: str | None = option(None, "Checkpoint directory, relative to the working or config directory.")
    tiny: TinyBase | None = option(None, "Build a tiny base from config instead of loading one.")

    def __post_init__(self) -> None:
        if bool(self.path) == (self.tiny is not None):
            raise ValueError(f"base {self.name!r} needs exactly one of 'path' (a checkpoint directory) or 'tiny'")


@dataclass
class TestConfig:
    """The test set: n_per_op held-out-template problems for each op count."""

    ops: list[int] = option(help="Op counts of the test slices.", factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    n_per_op: int = option(100, "Problems per test slice.")
    seed: int = option(12345, "Seed of the test problems.")


@dataclass
class LabelFreeCollection:
    """What each cell collects for the label-free estimates of its test risk (answers and
    confidences; no test answer is read): the point model and ``draws`` posterior draws on every
    test prompt and on ``source`` held-out problems of the cell's own training distribution, and the
    point model's judged answers on a ``pool`` of held-out problems of every test slice."""

    source: int = option(defaults.LABEL_FREE_SOURCE, "Held-out training-distribution problems per cell (0 = none).")
    draws: int = option(defaults.LABEL_FREE_DRAWS, "Posterior draws per prompt (pairs of draws give the disagreement).")
    pool: int = option(
        0, "Labelled pool problems per test slice, shared by every cell and never trained on: each cell's "
        "answers on them are judged and stored, for the reweighted estimators iw and iw_slices (0 = none)."
    )

    def __post_init__(self) -> None:
        for key in ("source", "pool"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"label_free.{key} must be an integer >= 0, got {v!r}")
        if not isinstance(self.draws, int) or isinstance(self.draws, bool) or self.draws < 2:
            raise ValueError(f"label_free.draws must be an integer >= 2, got {self.draws!r}")


@dataclass
class SweepConfig:
    """The (base × objective × n × bucket × seed) grid and how each cell is trained and bounded."""

    name: str = option("sweep", "Name of the sweep (reports only; not part of the hash).")
    task: TaskConfig = option(help="The synthetic task.", factory=TaskConfig)
    bases: list[BaseSpec] = option(help="Base models.", factory=lambda: [BaseSpec("base", tiny=TinyBase())])
    budgets: list[int] = option(help="Training-set sizes n.", factory=lambda: [64, 256])
    buckets: dict[str, list[int]] = option(
        help="Difficulty buckets: name -> op counts.",
        factory=lambda: {"easy": [1, 2], "medium": [3, 4], "hard": [5, 6]},
    )
    seeds: list[int] = option(help="Seeds (data draw, LoRA init, posterior draws).", factory=lambda: [0])
    objectives: list[str] = option(help="Fine-tuning objectives: sft and/or dft.", factory=lambda: ["sft"])
    objective_budgets: dict[str, list[int]] = option(
        help="Optional: objective -> the budgets it runs at (a subset of budgets); objectives not "
        "named run at every budget.",
        factory=dict,
    )
    test: TestConfig = option(help="The test set.", factory=TestConfig)
    sft: SFTConfig = option(
        help="LoRA fine-tuning hyperparameters (objective and seed are set per cell).", factory=SFTConfig
    )
    bound: BoundConfig = option(
        help="How each cell's certificate is computed; its loss (default answer_error) is the one loss of the "
        "bound, the measured test risk, the observed optimum and every table and plot.",
        factory=BoundConfig,
    )
    prior: PriorConfig = option(
        help="Where each cell's prior is centred: data (default: two stages, the bound on the part of S the "
        "prior never saw) or pretrained (data-free; the adapter trained on all of S, sigma from the bound grid).",
        factory=PriorConfig,
    )
    tv: TVConfig = option(help="The TV proxy.", factory=TVConfig)
    label_free: LabelFreeCollection = option(
        help="Answers and confidences each cell collects for the label-free test-risk estimates.",
        factory=LabelFreeCollection,
    )
    eval: EvalConfig = option(help="Evaluation on the test slices.", factory=EvalConfig)
    threads: int = option(0, "torch threads (0 = torch's default; not part of the hash).")
    resources: Resources = option(help="What each cell asks of a cluster under a launcher (not part of the hash).", factory=Resources)
    decide: DecideConfig = option(
        help="How each group's best bucket is decided by a race on fresh test items (sweep --decide; not part of the hash).",
        factory=DecideConfig,
    )

    def __post_init__(self) -> None:
        _check_sweep(self)


def _check_sweep(cfg: SweepConfig) -> None:
    if cfg.prior.kind == "grid" or cfg.prior.adapter is not None:
        raise ValueError("prior.kind must be pretrained or two_stage in a sweep (it trains each cell's prior itself)")
    if not cfg.bases or len({b.name for b in cfg.bases}) != len(cfg.bases):
        raise ValueError("bases must be a non-empty list with unique names")
    for key in ("budgets", "seeds", "objectives"):
        if not getattr(cfg, key):
            raise ValueError(f"{key} must be a non-empty list")
    if any(n < 1 for n in cfg.budgets):
        raise ValueError(f"budgets must be integers >= 1, got {cfg.budgets!r}")
    if any(o not in OBJECTIVES for o in cfg.objectives):
        raise ValueError(f"objectives must be among {list(OBJECTIVES)}, got {cfg.objectives!r}")
    for obj, ns in cfg.objective_budgets.items():
        if obj not in cfg.objectives or not ns or any(n not in cfg.budgets for n in ns):
            raise ValueError(
                f"objective_budgets[{obj!r}] must name one of objectives {cfg.objectives} and a non-empty "
                f"subset of budgets {cfg.budgets}, got {ns!r}"
            )
    if not cfg.buckets:
        raise ValueError("buckets must map bucket names to lists of op counts")
    for b, ops in cfg.buckets.items():
        if not ops or any(o < 1 for o in ops):
            raise ValueError(f"bucket {b!r} must be a non-empty list of op counts >= 1, got {ops!r}")


def normalise_config(raw: Any) -> SweepConfig:
    """A :class:`SweepConfig` from a mapping (or a SweepConfig), validated. ValueError names the bad key."""
    if isinstance(raw, SweepConfig):
        return raw
    return from_dict(SweepConfig, raw)


def config_dict(cfg: SweepConfig) -> dict:
    """The JSON-ready mapping of a config (what ``sweep.json`` stores)."""
    return to_dict(cfg)


def base_fingerprint(path: str | Path) -> str:
    """Where-independent identity of a checkpoint directory: its config.json and, per weight file,
    name, size and the SHA-256 of its first and last MiB (fast even for multi-GB weights)."""
    p, h = Path(path), hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                fh.seek(max(0, size - (1 << 20)))
                h.update(fh.read())
    return h.hexdigest()[:16]


LATER_FIELDS = (
    ("sft", "precision", "fp32"),
    ("bound", "mc_examples", None),
    ("bound", "catoni_c", 1.0),
    ("prior", "search", "ascending"),
    ("prior", "adapter", None),
    ("prior", "n_prior", None),
    ("label_free", "pool", 0),
)


def _data_fingerprint(path: str) -> str:
    """A data file or folder by content; an unset path ("") stays "" (Path("") is the working
    directory, whose files must not enter the hash)."""
    if not path:
        return path
    p = Path(path)
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + f.read_bytes())
        return h.hexdigest()[:16]
    return path


def _hashed_dict(cfg: SweepConfig) -> dict:
    """The config as hashed: results-relevant fields only, bases and data files by content."""
    d = config_dict(cfg)
    for key in ("name", "threads", "resources", "decide"):
        d.pop(key)
    d["sft"].pop("progress")
    # Fields added after a run began, at the default that reproduces the old behaviour, stay out of
    # the hash, so committed run folders keep resuming.
    if d["prior"]["kind"] == "pretrained":  # the recipe of every run before the section existed
        d.pop("prior")
    elif d["prior"]["kind"] == "two_stage":  # hashed by its old name, "data": committed folders keep resuming
        d["prior"]["kind"] = "data"
    if d["label_free"]["source"] == 0 and d["label_free"]["pool"] == 0:  # nothing collected: as before the section
        d.pop("label_free")
    for section, key, default in LATER_FIELDS:
        if section in d and d[section].get(key) == default:
            d[section].pop(key)
    if d["task"]["kind"] == "igsm":  # the dataset fields do not touch iGSM results (older hashes stay)
        d["task"] = {"modulus": d["task"]["modulus"]}
    else:  # data files by content, so the run folder resumes wherever the files live
        for key in ("train_path", "test_path", "irt_responses"):
            d["task"][key] = _data_fingerprint(d["task"][key])
    for b in d["bases"]:
        if b.get("path"):
            b["path"] = base_fingerprint(b["path"]) if Path(b["path"]).is_dir() else b["path"]
    return d


def _digest(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: SweepConfig) -> str:
    """Hash of everything that determines the results (name, threads, resources and progress display excluded).
    A base checkpoint enters by :func:`base_fingerprint`, not by its path, so a run folder resumes
    on another machine or checkout."""
    return _digest(_hashed_dict(cfg))


def cell_hash(cfg: SweepConfig, base: str) -> str:
    """Hash of what one cell of ``base`` depends on: the config without the grid's other axes
    (budgets, seeds, objectives) and with only this base. A dataset task bins difficulty with the
    first base's tokenizer, so there the first base enters every cell's hash too."""
    d = _hashed_dict(cfg)
    for key in ("budgets", "seeds", "objectives", "objective_budgets"):
        d.pop(key)
    bases = {b["name"]: b for b in d.pop("bases")}
    if base not in bases:
        raise ValueError(f"base must be one of the config's bases ({', '.join(bases)}), got {base!r}")
    d["base"] = bases[base]
    if cfg.task.kind == "dataset":
        d["binning_base"] = next(iter(bases.values()))
    return _digest(d)


def _read(p: Path) -> Any:
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"config {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config {str(p)!r} is not valid JSON: {exc.msg}") from None
    raise ValueError(f"config {str(p)!r} must be .yaml, .yml or .json")


def load_config(path: str | Path) -> SweepConfig:
    """Read a YAML/JSON config file (parsed as data, never executed) into a :class:`SweepConfig`.

    A bare name such as ``demo`` means ``experiments/configs/demo.yaml``. A relative base ``path``
    is resolved against the working directory first and the config file's folder second; the
    name ``@shipped`` points at the base shipped in the package.
    """
    p = Path(path)
    if not p.is_file():
        cand = CONFIG_DIR / f"{path}.yaml"
        if not cand.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        p = cand
    cfg = normalise_config(_read(p))
    bases = [dataclasses.replace(b, path=str(resolve_base_path(b.path, p.parent))) if b.path else b for b in cfg.bases]
    task = cfg.task
    if task.kind == "dataset":
        keys = ("train_path", "test_path") + (("irt_responses",) if task.irt_responses else ())
        paths = {k: str(resolve_data_path(getattr(task, k), p.parent)) for k in keys}
        task = dataclasses.replace(task, **paths)
    return dataclasses.replace(cfg, bases=bases, task=task)


def _search_path(path: str, config_dir: Path, found, what: str) -> Path:
    """The first of: ``path`` as given, relative to the config's folder, relative to the project
    root (the folder holding ``experiments/configs``) for which ``found(candidate)`` holds."""
    for cand in (Path(path), config_dir / path, CONFIG_DIR.parent.parent / path):
        if found(cand):
            return cand.resolve()
    raise ValueError(f"config: {what} path {path!r} does not exist")


def resolve_data_path(path: str, config_dir: Path) -> Path:
    """A data file or saved-dataset folder (see :func:`_search_path` for where it is looked for)."""
    return _search_path(path, config_dir, Path.exists, "data")


def resolve_base_path(path: str, config_dir: Path) -> Path:
    """``@shipped`` or an existing directory (see :func:`_search_path` for where it is looked for)."""
    if path == "@shipped":
        return SHIPPED_BASE
    return _search_path(path, config_dir, Path.is_dir, "base")
