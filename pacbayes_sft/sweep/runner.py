"""The (base × objective × n × difficulty bucket × seed) grid of LoRA fine-tunings.

For each cell: draw n training examples from the bucket (training templates only), LoRA-fine-tune,
evaluate every test slice, and compute the certificate terms — KL, Monte-Carlo stochastic
training risk, a classifier TV proxy between the training sample and the test distribution,
G_gen, G_ext and the total. Each finished cell is written atomically (temporary file, then
rename) as ``cells/<cell id>.json`` with the hash of the inputs it depends on (its cell hash, see
:mod:`pacbayes_sft.sweep_store`); running the same command again skips finished cells and redoes
missing, broken or partial ones, so an interrupted sweep loses nothing finished. Changing a config
(``update=True``) reruns only the cells whose inputs changed. ``shard=(i, N)`` runs the cells whose index ≡ i mod N,
so N processes or machines can share one sweep; :mod:`pacbayes_sft.report` merges them.

The config is parsed data (YAML or JSON), never executed; unknown keys and wrong types are refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters import INIT_FILE
from .config import SweepConfig, cell_hash, config_hash, load_config, normalise_config, resolve_base_path
from .store import FolderState, atomic_write, claim_folder, folder_config, read_record

log = logging.getLogger("pacbayes_sft.sweep")

__all__ = [
    "Cell",
    "SweepConfig",
    "cell_hash",
    "cells_of",
    "config_hash",
    "load_config",
    "normalise_config",
    "read_cell",
    "resolve_base_path",
    "run_cell",
    "run_sweep",
    "select_cells",
]

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


def cells_of(cfg: SweepConfig) -> list[Cell]:
    """Every cell of the grid in a fixed order (sharding relies on it): objective, then budget
    (small first), then base, bucket and seed — so a study cut short holds whole maps of its
    first objective at its smaller budgets."""
    return [
        Cell(b.name, o, n, bk, s)
        for o in cfg.objectives
        for n in cfg.objective_budgets.get(o, cfg.budgets)
        for b in cfg.bases
        for bk in cfg.buckets
        for s in cfg.seeds
    ]


def read_cell(path: Path, valid: FolderState | str) -> dict | None:
    """A finished cell's record, or None if it is missing, unreadable, partial or not a result of
    the config: ``valid`` is a folder's :class:`~pacbayes_sft.sweep_store.FolderState`, or a config
    hash the record's ``config_hash`` must equal."""
    rec = read_record(path)
    if rec is None:
        return None
    ok = rec.get("config_hash") == valid if isinstance(valid, str) else valid.accepts(rec)
    return rec if ok else None


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class SweepContext:
    cfg: SweepConfig
    out: Path
    bases: dict = field(default_factory=dict)  # name -> (model_dir, tokenizer)
    test_set: list = field(default_factory=list)
    test_slices: dict = field(default_factory=dict)  # op (or difficulty bin) -> its test problems
    pool: list = field(default_factory=list)  # dataset task: the binned training pool
    edges: list = field(default_factory=list)  # dataset task: the difficulty bin edges
    dropped: dict = field(default_factory=dict)  # dataset task: examples dropped as too long


def _prepare_base(spec, out: Path, modulus: int, task_kind: str = "igsm"):
    from ..data.tokenizer import igsm_tokenizer, load_tokenizer

    if spec.path:
        return Path(spec.path), load_tokenizer(spec.path)
    if task_kind == "dataset":
        raise ValueError(
            f"base {spec.name!r}: a dataset task needs a base checkpoint directory (path), not a tiny base"
        )
    from ..training.models import build_model, tiny_config

    target = out / "bases" / spec.name
    tok = igsm_tokenizer(modulus)
    if not (target / "config.json").is_file():
        t = spec.tiny
        config = tiny_config(t.arch, len(tok), hidden=t.hidden, layers=t.layers, heads=t.heads, max_positions=1024)
        model = build_model(config, seed=t.seed)
        tmp = target.with_name(target.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    return target, tok


def _test_examples(cfg: SweepConfig) -> list:
    from ..data.igsm import IGSMConfig, generate

    t = cfg.test
    ic = IGSMConfig(modulus=cfg.task.modulus)
    return [p for op in t.ops for p in generate(t.n_per_op, op, split="test", seed=t.seed + op, config=ic)]


def _train_examples(ctx: SweepContext, cell: Cell) -> list:
    from ..data.igsm import IGSMConfig, generate
    from .tasks import draw_train

    cfg = ctx.cfg
    if cfg.task.kind == "dataset":
        return draw_train(ctx.pool, cfg.buckets[cell.bucket], cell.n, cell.seed, cell.bucket)
    ic = IGSMConfig(modulus=cfg.task.modulus)
    # The same (bucket, seed) draws nested samples across budgets: the first n of one stream.
    stream_seed = 1_000 * cell.seed + sorted(cfg.buckets).index(cell.bucket) + 7
    return generate(cell.n, cfg.buckets[cell.bucket], split="train", seed=stream_seed, config=ic)


def _dataset_context(ctx: SweepContext) -> None:
    """Load and bin the dataset task's pool and test set (difficulty by the first base's tokenizer,
    so every base sees the same buckets and slices), and refuse buckets too small for the budgets."""
    from transformers import AutoConfig

    from .tasks import cap_slices, load_split

    cfg, (base_dir, tok) = ctx.cfg, next(iter(ctx.bases.values()))
    for b, (_, t) in ctx.bases.items():
        if t.pad_token_id is None:
            raise ValueError(f"base {b!r}: its tokenizer has no pad token; set one (e.g. the eos token) and save it")
    mc = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
    max_tokens = int(getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", 2048))
    kw: dict = {"max_new_tokens": cfg.eval.max_new_tokens}
    if cfg.task.difficulty in ("base_nll", "base_pass_rate"):  # measured by the first base itself
        from ..training.models import load_causal_lm

        kw["model"] = load_causal_lm(base_dir)
    pool = load_split(cfg.task.train_path, cfg.task, tok, max_tokens, **kw)
    test = load_split(cfg.task.test_path, cfg.task, tok, max_tokens, edges=pool.edges, **kw)
    ctx.pool, ctx.edges = pool.examples, pool.edges
    ctx.dropped = {"train": pool.dropped_too_long, "test": test.dropped_too_long}
    ctx.test_set = cap_slices(test.examples, cfg.test.ops, cfg.test.n_per_op, cfg.test.seed)
    bins = lambda ex: {str(b): sum(e.op == b for e in ex) for b in sorted({e.op for e in ex})}  # noqa: E731
    summary = {"edges": ctx.edges, "dropped_too_long": ctx.dropped, "pool_per_bin": bins(ctx.pool)}
    ctx.out.mkdir(parents=True, exist_ok=True)
    atomic_write(ctx.out / "dataset.json", json.dumps(summary | {"test_per_bin": bins(ctx.test_set)}, indent=1))
    need = max(n for o in cfg.objectives for n in cfg.objective_budgets.get(o, cfg.budgets))
    for bucket, bins in cfg.buckets.items():
        have = sum(e.op in set(bins) for e in ctx.pool)
        if have < need:
            raise ValueError(
                f"bucket {bucket!r} (bins {bins}) holds {have} training examples, fewer than the largest budget {need}"
            )


def run_cell(ctx: SweepContext, cell: Cell, *, progress: bool = False) -> dict:
    """Fine-tune, evaluate and bound one cell; returns its record (not yet written)."""
    from ..training.models import load_causal_lm
    from ..training.sft import finetune

    cfg = ctx.cfg
    t0 = time.perf_counter()
    base_dir, tok = ctx.bases[cell.base]
    train = _train_examples(ctx, cell)
    sft_cfg = dataclasses.replace(cfg.sft, objective=cell.objective, seed=cell.seed, progress=progress)
    adapter_dir = ctx.out / "adapters" / cell.id
    prompts, responses = [p.prompt for p in train], [p.response for p in train]
    res = finetune(load_causal_lm(base_dir), tok, prompts, responses, sft_cfg, adapter_dir)
    rows, items = evaluate_test_items(ctx, res.model, tok, cell.id)
    cert = _cell_certificate(ctx, cell, res.model, train)
    st = _stochastic_test_risk(ctx, res.model, tok, cert, cell.seed)
    return {
        "cell": cell.__dict__ | {"id": cell.id},
        "status": "done",
        "loss": cert.loss,  # the one loss of the bound, the stochastic test risk and the report
        "rows": rows,
        "items": items,
        "terms": cell_terms(cert)
        | {"stoch_test_risk": st.mean, "stoch_test_lower": st.lower, "stoch_test_upper": st.upper},
        "sigma_grid": cert.grid,
        "ledger": cert.delta.ledger,
        "training": res.log,
        "seconds": time.perf_counter() - t0,
    }


def certify_cell(run_dir: str | Path, cell_id: str, *, progress: bool = False):
    """The certificate of one finished cell of a sweep, recomputed from its adapter, its training
    examples (redrawn exactly as the sweep drew them) and the sweep's test set and settings."""
    out = Path(run_dir)
    cfg, _ = folder_config(out)
    cell = next((c for c in cells_of(cfg) if c.id == cell_id), None)
    if cell is None:
        raise ValueError(f"cell {cell_id!r} is not in the sweep {str(out)!r} (ids look like {cells_of(cfg)[0].id})")
    adapter = out / "adapters" / cell.id
    if not (adapter / "adapter_config.json").is_file():
        raise ValueError(f"cell {cell_id!r} has no saved adapter under {str(adapter)!r}; run the sweep first")
    ctx = _context(cfg, out)
    return _cell_certificate(ctx, cell, adapter, _train_examples(ctx, cell), progress=progress)


def _cell_certificate(ctx: SweepContext, cell: Cell, adapter, train: list, *, progress: bool = False):
    """Every bound term of a cell comes from certify(), the same code a user calls for one adapter,
    with the sweep's bound, TV, evaluation settings and judge (``adapter``: a model or its folder)."""
    from ..certify.api import certify

    cfg = ctx.cfg
    base_dir, tok = ctx.bases[cell.base]
    init = ctx.out / "adapters" / cell.id / INIT_FILE
    return certify(
        base_dir,
        adapter,
        train,
        ctx.test_set,
        bound=cfg.bound,
        tv=cfg.tv,
        tokenizer=tok,
        seed=cell.seed,
        batch_size=cfg.eval.batch_size,
        init=init if cfg.bound.space == "lora" else None,
        progress=progress,
        scorer=_verifier(cfg),
        max_new_tokens=cfg.eval.max_new_tokens,
    )


def _verifier(cfg: SweepConfig):
    """The task's judge of a generated solution, ``(problem, text) -> bool`` (answer_error)."""
    from ..data.scorers import answer_judge
    from .tasks import igsm_judge

    return answer_judge(cfg.task.scorer) if cfg.task.kind == "dataset" else igsm_judge(cfg.task.modulus)


def _stochastic_test_risk(ctx: SweepContext, model, tok, cert, seed: int):
    """E_π R_test at the certificate's σ — the quantity the bound is about — on the whole test set."""
    from ..certify.api import example_losses, stochastic_risk

    cfg = ctx.cfg
    losses = example_losses(
        tok,
        ctx.test_set,
        cfg.bound.loss,
        scorer=_verifier(cfg),
        max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size,
    )
    return stochastic_risk(model, losses, cert.sigma.value, cfg.bound.space, seed=10_007 + seed)


def cell_terms(cert) -> dict:
    """The flat bound terms a sweep cell records, from its :class:`~pacbayes_sft.certificate.Certificate`."""
    return {
        "point_train_risk": cert.empirical_risk.point,
        "mc_mean_risk": cert.empirical_risk.mc_mean,
        "mc_risk_upper": cert.empirical_risk.mc_upper,
        "kl": cert.kl.value_nats,
        "sigma": cert.sigma.value,
        "g_gen": cert.g_gen.seeger,
        "g_gen_maurer": cert.g_gen.maurer,
        "tv": cert.tv.estimate,
        "tv_lower": cert.tv.lower,
        "tv_p_value": cert.tv.p_value,
        "tv_plug_in": cert.tv.plug_in,
        "g_ext": cert.g_ext,
        "total": cert.total,
        "sqrt_kl_over_n": (cert.kl.value_nats / cert.n) ** 0.5,
    }


ITEM_METRICS = ("token_error", "exact_match", "answer_correct")


def evaluate_test_items(ctx: SweepContext, model, tok, model_name: str) -> tuple[list[dict], dict[str, list]]:
    """Tidy per-slice rows of ``model`` on every test op slice, and its per-item results (slice,
    token_error, exact_match, answer_correct) for the bootstrap and IRT."""
    from ..training.evaluate import evaluate_items, slice_rows

    e, judge = ctx.cfg.eval, _verifier(ctx.cfg)
    by_prompt = {p.prompt: p for p in ctx.test_set}
    items = evaluate_items(
        model,
        tok,
        ctx.test_slices,
        generate=e.generate,
        verifier=lambda pr, o: judge(by_prompt[pr], o),
        batch_size=e.batch_size,
        max_new_tokens=e.max_new_tokens,
    )
    compact = {"slice": items["slice"]} | {k: [round(v, 6) for v in items[k]] for k in ITEM_METRICS if k in items}
    return slice_rows(items, model_name), compact


def evaluate_test_slices(ctx: SweepContext, model, tok, model_name: str) -> list[dict]:
    """Tidy evaluation rows of ``model`` on every test op slice, with the sweep's eval settings."""
    return evaluate_test_items(ctx, model, tok, model_name)[0]


def base_rows(ctx: SweepContext, name: str) -> list[dict]:
    """Evaluation rows of a base model itself (the reference for per-slice changes)."""
    return base_record(ctx, name)["rows"]


def base_record(ctx: SweepContext, name: str) -> dict:
    """A base model's evaluation record (rows and items), the reference of per-slice changes."""
    from ..training.models import load_causal_lm

    base_dir, tok = ctx.bases[name]
    rows, items = evaluate_test_items(ctx, load_causal_lm(base_dir), tok, f"{name}__base")
    return {
        "cell": {"id": f"{name}__base", "base": name, "objective": "base"},
        "status": "done",
        "rows": rows,
        "items": items,
    }


def _context(cfg: SweepConfig, out: Path) -> SweepContext:
    ctx = SweepContext(cfg=cfg, out=out)
    for b in cfg.bases:
        ctx.bases[b.name] = _prepare_base(b, out, cfg.task.modulus, cfg.task.kind)
    if cfg.task.kind == "dataset":
        _dataset_context(ctx)
    else:
        ctx.test_set = _test_examples(cfg)
    for p in ctx.test_set:
        ctx.test_slices.setdefault(p.op, []).append(p)
    return ctx


def _write_base_cells(ctx: SweepContext, state: FolderState) -> None:
    """Base evaluations are cells too (one per base), so every shard's report has the reference."""
    for b in ctx.cfg.bases:
        bpath = ctx.out / "cells" / f"{b.name}__base.json"
        if read_cell(bpath, state) is None:
            atomic_write(bpath, json.dumps(base_record(ctx, b.name) | state.stamp(b.name)))


def cell_summary(cell: Cell, rec: dict) -> str:
    """The one line a finished cell prints."""
    t = rec["terms"]
    return (
        f"cell {cell.id}: train risk {t['point_train_risk']:.3f}, KL {t['kl']:.3g}, G_gen {t['g_gen']:.3f}, "
        f"TV {t['tv']:.3f}, total {t['total']:.3f} ({rec['seconds']:.0f} s)"
    )


CELL_FIELDS = ("base", "objective", "n", "bucket", "seed")


def select_cells(cells: list[Cell], only: Mapping[str, Iterable[object]] | None) -> list[Cell]:
    """The cells whose keys take one of the listed values, e.g. ``{"base": ["strong"],
    "objective": ["dft"], "n": [32, 128]}`` (values compared as text). A key or value that matches
    no cell of the grid is an error, so a typo cannot silently select nothing."""
    if not only:
        return cells
    chosen = cells
    for key, values in only.items():
        if key not in CELL_FIELDS:
            raise ValueError(f"only: unknown cell field {key!r}; expected one of {', '.join(CELL_FIELDS)}")
        wanted = {str(v) for v in values}
        present = {str(getattr(c, key)) for c in cells}
        if not wanted or not wanted <= present:
            missing = sorted(wanted - present) or ["(no values)"]
            raise ValueError(f"only: {key}={','.join(missing)} is not in the grid; it has {', '.join(sorted(present))}")
        chosen = [c for c in chosen if str(getattr(c, key)) in wanted]
    return chosen


def _parse_shard(shard: tuple[int, int]) -> tuple[int, int]:
    i, n_shards = shard
    if not (isinstance(i, int) and isinstance(n_shards, int) and n_shards >= 1 and 0 <= i < n_shards):
        raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {shard!r}")
    return i, n_shards


def run_sweep(
    cfg: SweepConfig | dict,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    only: Mapping[str, Iterable[object]] | None = None,
    update: bool = False,
    progress: bool = True,
    on_cell: Callable[[Cell, dict], None] | None = None,
) -> dict:
    """Run (or resume) the sweep into ``out_dir``. Returns a summary of what ran and what was skipped.

    ``only`` runs a part of the grid first (see :func:`select_cells`); a later run without it
    completes the same folder. A folder made by another config is refused unless ``update``: then
    it switches to this config and reruns only the cells whose inputs changed (see
    :mod:`pacbayes_sft.sweep_store`)."""
    import torch
    from tqdm.auto import tqdm

    cfg = normalise_config(cfg)
    i, n_shards = _parse_shard(shard)
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    state = claim_folder(out, cfg, update=update)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    ctx = _context(cfg, out)
    grid = cells_of(cfg)
    all_cells = select_cells(grid, only)
    mine = [c for k, c in enumerate(all_cells) if k % n_shards == i]
    todo = [c for c in mine if read_cell(out / "cells" / f"{c.id}.json", state) is None]
    summary = {"cells": len(grid), "selected": len(all_cells), "shard": list(shard), "in_shard": len(mine)}
    summary["skipped"] = len(mine) - len(todo)
    summary["ran"] = 0
    if i == 0:
        _write_base_cells(ctx, state)
    # disable=None: bars on a terminal only, so logs and CI output hold just the result lines
    bar = tqdm(todo, desc="cells", unit="cell", disable=None if progress else True, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(cell.id, refresh=True)
        rec = run_cell(ctx, cell, progress=progress) | state.stamp(cell.base)
        atomic_write(out / "cells" / f"{cell.id}.json", json.dumps(rec))
        summary["ran"] += 1
        log.info(cell_summary(cell, rec))
        if on_cell is not None:
            on_cell(cell, rec)
    return summary
