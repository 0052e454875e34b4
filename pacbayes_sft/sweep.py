"""The (base × objective × n × difficulty bucket × seed) grid of LoRA fine-tunings.

For each cell: draw n training examples from the bucket (training templates only), LoRA-fine-tune,
evaluate every test slice, and compute the certificate terms — KL, Monte-Carlo stochastic
training risk, a classifier TV proxy between the training sample and the test distribution,
G_gen, G_ext and the total. Each finished cell is written atomically (temporary file, then
rename) as ``cells/<cell id>.json`` with the hash of the configuration that produced it; running
the same command again skips finished cells and redoes missing, broken or partial ones, so an
interrupted sweep loses nothing finished. ``shard=(i, N)`` runs the cells whose index ≡ i mod N,
so N processes or machines can share one sweep; :mod:`pacbayes_sft.report` merges them.

The config is parsed data (YAML or JSON), never executed; unknown keys and wrong types are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("pacbayes_sft.sweep")

# ---------------------------------------------------------------------------------------------
# Configuration (plain dicts validated against a schema of defaults)

DEFAULTS: dict[str, Any] = {
    "name": "sweep",
    "task": {"modulus": 7},
    "bases": [{"name": "base", "path": None, "tiny": None}],
    "budgets": [64, 256],
    "buckets": {"easy": [1, 2], "medium": [3, 4], "hard": [5, 6]},
    "seeds": [0],
    "objectives": ["sft"],
    "test": {"ops": [1, 2, 3, 4, 5, 6, 7, 8], "n_per_op": 100, "seed": 12345},
    "sft": {"r": 8, "alpha": 16.0, "lr": 2e-3, "epochs": 3.0, "max_steps": -1, "batch_size": 16},
    "bound": {
        "sigmas": [1e-3, 3e-3, 1e-2],
        "space": "delta",
        "delta": 0.05,
        "m": 1,
        "mc_scheme": "per_example",
        "loss": "token_error",
        "mc_fraction": 0.2,
        "tv_fraction": 0.2,
    },
    "tv": {"features": "tfidf", "permutations": 200, "max_per_side": 2000},
    "eval": {"generate": True, "max_new_tokens": 256, "batch_size": 64},
    "threads": 0,
}
BASE_KEYS = {"name", "path", "tiny"}
TINY_KEYS = {"arch", "hidden", "layers", "heads", "seed"}


def _check(cfg: dict, schema: dict, where: str) -> dict:
    out = {}
    for key, value in cfg.items():
        if key not in schema:
            raise ValueError(f"config: unknown key {where}{key!r} (known: {sorted(schema)})")
        default = schema[key]
        if isinstance(default, dict) and key not in ("buckets",):
            if not isinstance(value, dict):
                raise ValueError(f"config: {where}{key} must be a mapping, got {type(value).__name__}")
            out[key] = _check(value, default, f"{where}{key}.")
        elif key == "buckets":
            if not isinstance(value, dict) or not value:
                raise ValueError(f"config: {where}buckets must map bucket names to lists of op counts")
            for b, ops in value.items():
                if not isinstance(ops, list) or not ops or not all(isinstance(o, int) and o >= 1 for o in ops):
                    raise ValueError(f"config: bucket {b!r} must be a non-empty list of op counts >= 1, got {ops!r}")
            out[key] = value
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"config: {where}{key} must be true or false, got {value!r}")
            out[key] = value
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"config: {where}{key} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and key != "lr":
                if not value.is_integer():
                    raise ValueError(f"config: {where}{key} must be an integer, got {value!r}")
                value = int(value)
            out[key] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"config: {where}{key} must be a string, got {value!r}")
            out[key] = value
        elif isinstance(default, list):
            if not isinstance(value, list) or not value:
                raise ValueError(f"config: {where}{key} must be a non-empty list, got {value!r}")
            out[key] = value
        else:
            out[key] = value
    merged = {k: (v if not isinstance(v, dict) or k == "buckets" else dict(v)) for k, v in schema.items()}
    for k, v in out.items():
        if isinstance(v, dict) and k != "buckets" and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    return merged


def normalise_config(raw: dict) -> dict:
    """Validate a config mapping and fill in defaults. Raises ValueError naming the bad key."""
    if not isinstance(raw, dict):
        raise ValueError(f"config must be a mapping, got {type(raw).__name__}")
    cfg = _check(raw, DEFAULTS, "")
    bases = []
    for i, b in enumerate(cfg["bases"]):
        if not isinstance(b, dict) or not set(b) <= BASE_KEYS or "name" not in b:
            raise ValueError(f"config: bases[{i}] must be a mapping with 'name' and one of 'path' or 'tiny', got {b!r}")
        if bool(b.get("path")) == bool(b.get("tiny")):
            raise ValueError(f"config: bases[{i}] needs exactly one of 'path' (a checkpoint directory) or 'tiny'")
        if b.get("tiny") is not None and (not isinstance(b["tiny"], dict) or not set(b["tiny"]) <= TINY_KEYS):
            raise ValueError(f"config: bases[{i}].tiny accepts keys {sorted(TINY_KEYS)}")
        bases.append({"name": str(b["name"]), "path": b.get("path"), "tiny": b.get("tiny")})
    if len({b["name"] for b in bases}) != len(bases):
        raise ValueError("config: base names must be unique")
    cfg["bases"] = bases
    for n in cfg["budgets"]:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"config: budgets must be integers >= 1, got {n!r}")
    for o in cfg["objectives"]:
        if o not in ("sft", "dft"):
            raise ValueError(f"config: objectives must be 'sft' or 'dft', got {o!r}")
    for s in cfg["seeds"]:
        if not isinstance(s, int):
            raise ValueError(f"config: seeds must be integers, got {s!r}")
    from .bounds import MC_SCHEMES

    if cfg["bound"]["mc_scheme"] not in MC_SCHEMES:
        raise ValueError(f"config: bound.mc_scheme must be one of {MC_SCHEMES}, got {cfg['bound']['mc_scheme']!r}")
    if not isinstance(cfg["bound"]["m"], int) or cfg["bound"]["m"] < 1:
        raise ValueError(f"config: bound.m must be an integer >= 1, got {cfg['bound']['m']!r}")
    if cfg["bound"]["space"] not in ("delta", "lora"):
        raise ValueError(f"config: bound.space must be 'delta' or 'lora', got {cfg['bound']['space']!r}")
    return cfg


def load_config(path: str | Path) -> dict:
    """Read a YAML/JSON config file (parsed as data, never executed) and normalise it.

    A relative base ``path`` is resolved against the repository's working directory first and
    the config file's folder second; the name ``@shipped`` points at the base shipped in the package.
    """
    p = Path(path)
    if not p.is_file():
        # allow a bare name such as "demo" for experiments/configs/demo.yaml
        cand = Path(__file__).resolve().parent.parent / "experiments" / "configs" / f"{path}.yaml"
        if cand.is_file():
            p = cand
        else:
            raise ValueError(f"config file {str(path)!r} does not exist")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"config {str(p)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    elif p.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config {str(p)!r} is not valid JSON: {exc.msg}") from None
    else:
        raise ValueError(f"config {str(p)!r} must be .yaml, .yml or .json")
    cfg = normalise_config(raw)
    for b in cfg["bases"]:
        if b["path"]:
            b["path"] = str(resolve_base_path(b["path"], p.parent))
    return cfg


def resolve_base_path(path: str, config_dir: Path) -> Path:
    if path == "@shipped":
        return Path(__file__).resolve().parent / "assets" / "base_igsm"
    for cand in (Path(path), config_dir / path):
        if cand.is_dir():
            return cand.resolve()
    raise ValueError(f"config: base path {path!r} does not exist")


def config_hash(cfg: dict) -> str:
    """Hash of everything that determines the results (name excluded)."""
    relevant = {k: v for k, v in cfg.items() if k not in ("name", "threads")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class Cell:
    base: str
    objective: str
    n: int
    bucket: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.base}__{self.objective}__n{self.n}__{self.bucket}__s{self.seed}"


def cells_of(cfg: dict) -> list[Cell]:
    """Every cell of the grid in a fixed order (sharding and resuming rely on it)."""
    return [
        Cell(b["name"], o, n, bk, s)
        for b in cfg["bases"]
        for o in cfg["objectives"]
        for n in cfg["budgets"]
        for bk in cfg["buckets"]
        for s in cfg["seeds"]
    ]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_cell(path: Path, chash: str) -> dict | None:
    """A finished cell's record, or None if it is missing, unreadable or from another config."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("config_hash") != chash or rec.get("status") != "done":
        return None
    return rec


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class SweepContext:
    cfg: dict
    out: Path
    bases: dict = field(default_factory=dict)  # name -> (model_dir, tokenizer)
    test_set: list = field(default_factory=list)
    test_slices: dict = field(default_factory=dict)  # op -> the test problems with that op


def _prepare_base(spec: dict, out: Path, modulus: int):
    from .data.tokenizer import igsm_tokenizer, load_tokenizer

    if spec["path"]:
        return Path(spec["path"]), load_tokenizer(spec["path"])
    from .training.models import build_model, tiny_config

    target = out / "bases" / spec["name"]
    tok = igsm_tokenizer(modulus)
    if not (target / "config.json").is_file():
        t = spec["tiny"]
        model = build_model(
            tiny_config(
                t.get("arch", "llama"),
                len(tok),
                hidden=t.get("hidden", 32),
                layers=t.get("layers", 2),
                heads=t.get("heads", 4),
                max_positions=1024,
            ),
            seed=t.get("seed", 0),
        )
        tmp = target.with_name(target.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    return target, tok


def _test_examples(cfg: dict) -> list:
    from .data.igsm import IGSMConfig, generate

    t = cfg["test"]
    ic = IGSMConfig(modulus=cfg["task"]["modulus"])
    return [p for op in t["ops"] for p in generate(t["n_per_op"], op, split="test", seed=t["seed"] + op, config=ic)]


def _train_examples(cfg: dict, cell: Cell) -> list:
    from .data.igsm import IGSMConfig, generate

    ic = IGSMConfig(modulus=cfg["task"]["modulus"])
    # The same (bucket, seed) draws nested samples across budgets: the first n of one stream.
    stream_seed = 1_000 * cell.seed + sorted(cfg["buckets"]).index(cell.bucket) + 7
    return generate(cell.n, cfg["buckets"][cell.bucket], split="train", seed=stream_seed, config=ic)


def run_cell(ctx: SweepContext, cell: Cell, *, progress: bool = False) -> dict:
    """Fine-tune, evaluate and bound one cell; returns its record (not yet written)."""
    from .certify import certify
    from .estimators.lora import INIT_FILE
    from .training.models import load_causal_lm
    from .training.sft import SFTConfig, finetune

    cfg = ctx.cfg
    t0 = time.perf_counter()
    base_dir, tok = ctx.bases[cell.base]
    train = _train_examples(cfg, cell)
    prompts, responses = [p.prompt for p in train], [p.response for p in train]
    s = cfg["sft"]
    sft_cfg = SFTConfig(
        objective=cell.objective,
        r=s["r"],
        alpha=s["alpha"],
        lr=s["lr"],
        epochs=s["epochs"],
        max_steps=s["max_steps"],
        batch_size=s["batch_size"],
        seed=cell.seed,
        progress=progress,
    )
    adapter_dir = ctx.out / "adapters" / cell.id
    res = finetune(load_causal_lm(base_dir), tok, prompts, responses, sft_cfg, adapter_dir)
    model = res.model
    e = cfg["eval"]
    rows = evaluate_test_slices(ctx, model, tok, cell.id)

    # Every bound term comes from certify(), the same code a user calls for one adapter.
    b, tvc = cfg["bound"], cfg["tv"]
    _, doc = certify(
        base_dir,
        model,
        train,
        ctx.test_set,
        tokenizer=tok,
        sigmas=b["sigmas"],
        space=b["space"],
        delta=b["delta"],
        mc_fraction=b["mc_fraction"],
        tv_fraction=b["tv_fraction"],
        m=b["m"],
        mc_scheme=b["mc_scheme"],
        loss=b["loss"],
        tv_features=tvc["features"],
        tv_permutations=tvc["permutations"],
        tv_max_per_side=tvc["max_per_side"],
        seed=cell.seed,
        batch_size=e["batch_size"],
        init=adapter_dir / INIT_FILE if b["space"] == "lora" else None,
    )
    kl = doc["kl"]["value_nats"]
    return {
        "cell": cell.__dict__ | {"id": cell.id},
        "status": "done",
        "rows": rows,
        "terms": {
            "point_train_risk": doc["empirical_risk"]["point"],
            "mc_mean_risk": doc["empirical_risk"]["mc_mean"],
            "mc_risk_upper": doc["empirical_risk"]["mc_upper"],
            "kl": kl,
            "sigma": doc["sigma"]["value"],
            "g_gen": doc["g_gen"]["seeger"],
            "g_gen_maurer": doc["g_gen"]["maurer"],
            "tv": doc["tv"]["estimate"],
            "tv_lower": doc["tv"]["lower"],
            "tv_p_value": doc["tv"]["p_value"],
            "tv_plug_in": doc["tv"]["plug_in"],
            "g_ext": doc["g_ext"],
            "total": doc["total"],
            "sqrt_kl_over_n": (kl / cell.n) ** 0.5,
        },
        "sigma_grid": doc["grid"],
        "ledger": doc["delta"]["ledger"],
        "training": {k2: v for k2, v in res.log.items() if k2 != "history"} | {"history": res.log["history"]},
        "seconds": time.perf_counter() - t0,
    }


def evaluate_test_slices(ctx: SweepContext, model, tok, model_name: str) -> list[dict]:
    """Tidy evaluation rows of ``model`` on every test op slice, with the sweep's eval settings."""
    from .data.igsm import verify
    from .training.evaluate import evaluate_slices

    mod = ctx.cfg["task"]["modulus"]
    e = ctx.cfg["eval"]
    return evaluate_slices(
        model,
        tok,
        ctx.test_slices,
        model_name=model_name,
        generate=e["generate"],
        verifier=lambda pr, o: verify(pr, o, mod).answer_correct,
        batch_size=e["batch_size"],
        max_new_tokens=e["max_new_tokens"],
    )


def base_rows(ctx: SweepContext, name: str) -> list[dict]:
    """Evaluation rows of a base model itself (the reference for per-slice changes)."""
    from .training.models import load_causal_lm

    base_dir, tok = ctx.bases[name]
    return evaluate_test_slices(ctx, load_causal_lm(base_dir), tok, f"{name}__base")


def run_sweep(
    cfg: dict,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> dict:
    """Run (or resume) the sweep into ``out_dir``. Returns a summary of what ran and what was skipped."""
    import torch

    cfg = normalise_config(cfg)
    i, n_shards = shard
    if not (isinstance(i, int) and isinstance(n_shards, int) and n_shards >= 1 and 0 <= i < n_shards):
        raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {shard!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chash = config_hash(cfg)
    meta_path = out / "sweep.json"
    if meta_path.is_file():
        try:
            prev = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            prev = {}
        if prev.get("config_hash") not in (None, chash):
            raise ValueError(
                f"out_dir {str(out)!r} holds results of another config (hash {prev.get('config_hash')}, "
                f"this config {chash}); use a new output directory"
            )
    _atomic_write(meta_path, json.dumps({"config_hash": chash, "config": cfg}, indent=2, default=str))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    (out / "cells").mkdir(exist_ok=True)
    ctx = SweepContext(cfg=cfg, out=out)
    for b in cfg["bases"]:
        ctx.bases[b["name"]] = _prepare_base(b, out, cfg["task"]["modulus"])
    ctx.test_set = _test_examples(cfg)
    for p in ctx.test_set:
        ctx.test_slices.setdefault(p.op, []).append(p)

    all_cells = cells_of(cfg)
    mine = [c for k, c in enumerate(all_cells) if k % n_shards == i]
    todo = [c for c in mine if read_cell(out / "cells" / f"{c.id}.json", chash) is None]
    summary = {
        "cells": len(all_cells),
        "shard": list(shard),
        "in_shard": len(mine),
        "skipped": len(mine) - len(todo),
        "ran": 0,
    }
    # Base evaluations are cells too (one per base), so every shard's report has the reference.
    for b in cfg["bases"]:
        bpath = out / "cells" / f"{b['name']}__base.json"
        if i == 0 and read_cell(bpath, chash) is None:
            rec = {
                "cell": {"id": f"{b['name']}__base", "base": b["name"], "objective": "base"},
                "status": "done",
                "config_hash": chash,
                "rows": base_rows(ctx, b["name"]),
            }
            _atomic_write(bpath, json.dumps(rec))
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="cells", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.id)
        rec = run_cell(ctx, cell, progress=progress)
        rec["config_hash"] = chash
        _atomic_write(out / "cells" / f"{cell.id}.json", json.dumps(rec))
        summary["ran"] += 1
        t = rec["terms"]
        msg = (
            f"cell {cell.id}: train risk {t['point_train_risk']:.3f}, KL {t['kl']:.3g}, G_gen {t['g_gen']:.3f}, "
            f"TV {t['tv']:.3f}, total {t['total']:.3f} ({rec['seconds']:.0f} s)"
        )
        log.info(msg)
        if progress:
            tqdm.write(msg)
        if on_cell is not None:
            on_cell(cell, rec)
    return summary
