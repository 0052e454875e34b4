"""Run the (base × objective × n × difficulty bucket × seed) grid of LoRA fine-tunings.

For each cell: the task draws n training examples from the bucket, LoRA fine-tunes, every test
slice is evaluated, and :func:`~pacbayes_sft.certify.certify` computes the certificate terms —
KL, Monte-Carlo stochastic training risk, a classifier TV proxy between the training sample and
the test distribution, G_gen, G_ext and the total. Each finished cell is written atomically
(temporary file, then rename) as ``cells/<cell id>.json`` (a
:class:`~pacbayes_sft.sweep.record.CellRecord`) with the hash of the inputs it depends on (see
:mod:`pacbayes_sft.sweep.store`); running the same command again skips finished cells and redoes
missing, broken or partial ones, so an interrupted sweep loses nothing finished. Changing a
config (``update=True``) reruns only the cells whose inputs changed. ``shard=(i, N)`` runs the
cells whose index ≡ i mod N, so N processes or machines can share one sweep;
:mod:`pacbayes_sft.report` merges them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..adapters import INIT_FILE, attach_adapter
from ..bounds import is_vacuous
from ..certify import CertifySettings, certify, example_losses, stochastic_risk
from ..certify.losses import proved_by_teacher_forcing
from ..certify.tv_term import tv_cache
from ..certify.two_stage import certify_two_stage, load_posterior_state, recertify_two_stage, save_posterior_state
from ..data.tokenizer import load_tokenizer
from ..training.evaluate import evaluate_items, slice_rows
from ..training.models import build_model, load_causal_lm, tiny_config
from ..training.sft import FinetuneResult, finetune
from .cells import Cell, cells_of, find_cell, parse_shard, select_cells
from .config import BaseSpec, SweepConfig, normalise_config
from .label_free import collect_cell
from .record import CellRecord, cell_terms
from .store import FolderState, atomic_write, claim_folder, clear_failure, folder_config, read_record
from .tasks import Task, make_task

TV_CACHE_DIR = "tv"
"""Under a run folder: the cells' TV terms, one small JSON file per (training sample, test set, settings)."""
log = logging.getLogger("pacbayes_sft.sweep")

ITEM_METRICS = ("token_error", "exact_match", "answer_correct")


@dataclass
class SweepContext:
    """What every cell of a run shares: the config, the run folder, the bases and the task."""

    cfg: SweepConfig
    out: Path
    task: Task
    bases: dict = field(default_factory=dict)  # name -> (model_dir, tokenizer)


def _prepare_base(spec: BaseSpec, out: Path, task: Task) -> tuple[Path, object]:
    """A base checkpoint directory and its tokenizer; a tiny base is built once under ``out/bases``."""
    if spec.path:
        return Path(spec.path), load_tokenizer(spec.path)
    tok = task.tokenizer_for_tiny_base(spec.name)
    target = out / "bases" / spec.name
    if not (target / "config.json").is_file():
        t = spec.tiny
        config = tiny_config(t.arch, len(tok), hidden=t.hidden, layers=t.layers, heads=t.heads, max_positions=1024)
        tmp = target.with_name(target.name + ".tmp")
        build_model(config, seed=t.seed).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    return target, tok


def prepare_bases(cfg: SweepConfig, out: Path, task: Task | None = None) -> dict:
    """Every base of the config: name -> (checkpoint directory, tokenizer); tiny ones built once."""
    task = task or make_task(cfg)
    return {b.name: _prepare_base(b, out, task) for b in cfg.bases}


def sweep_context(cfg: SweepConfig, out: Path) -> SweepContext:
    """The bases (built or loaded) and the task's data, for the runs of one folder."""
    ctx = SweepContext(cfg=cfg, out=out, task=make_task(cfg))
    ctx.bases = prepare_bases(cfg, out, ctx.task)
    ctx.task.prepare(ctx.bases, out)
    return ctx


def read_cell(path: Path, valid: FolderState | str) -> CellRecord | None:
    """A finished cell's record, or None if it is missing, unreadable, partial or not a result of
    the config: ``valid`` is a folder's :class:`~pacbayes_sft.sweep.store.FolderState`, or a config
    hash the record's ``config_hash`` must equal."""
    rec = read_record(path)
    if rec is None:
        return None
    ok = rec.config_hash == valid if isinstance(valid, str) else valid.accepts(rec)
    return rec if ok else None


def train_cell(ctx: SweepContext, cell: Cell, *, train: list | None = None, progress: bool = False) -> FinetuneResult:
    """Fine-tune one cell's LoRA adapter from its seed: the training step of :func:`run_cell`, and
    what a race calls to retrain a cell whose adapter is gone (so both train the same adapter from
    the same examples, settings and seed).

    The sweep's SFT settings with the cell's objective and seed train on the cell's examples
    (``train``, if already drawn; else ``ctx.task.train_examples(cell)``). Under the data-dependent
    prior (``prior.kind == "two_stage"``) only the prior's part, the first ``prior.split(n)`` examples,
    trains P, saved under ``adapters/<cell id>/prior``; otherwise every example trains the adapter
    saved as ``adapters/<cell id>``. Returns the fine-tuning result (its ``model`` in memory)."""
    base_dir, tok = ctx.bases[cell.base]
    train = ctx.task.train_examples(cell) if train is None else train
    sft_cfg = dataclasses.replace(ctx.cfg.sft, objective=cell.objective, seed=cell.seed, progress=progress)
    prompts, responses = [p.prompt for p in train], [p.response for p in train]
    adapter = ctx.out / "adapters" / cell.id
    if ctx.cfg.prior.kind == "two_stage":
        n_p = ctx.cfg.prior.split(len(train))
        prompts, responses, adapter = prompts[:n_p], responses[:n_p], adapter / "prior"
    return finetune(load_causal_lm(base_dir), tok, prompts, responses, sft_cfg, adapter)


def run_cell(ctx: SweepContext, cell: Cell, *, progress: bool = False) -> CellRecord:
    """Fine-tune (:func:`train_cell`), evaluate and bound one cell; returns its record (not yet written)."""
    cfg, t0 = ctx.cfg, time.perf_counter()
    _, tok = ctx.bases[cell.base]
    train = ctx.task.train_examples(cell)
    adapter = ctx.out / "adapters" / cell.id
    clock = _Stages()
    # the TV term depends on (bucket, n, seed) only: every base and objective of one shares it
    with tv_cache(ctx.out / TV_CACHE_DIR):
        res = train_cell(ctx, cell, train=train, progress=progress)
        clock.lap("training")
        if cfg.prior.kind == "two_stage":
            cert, state = _two_stage(ctx, cell, res.model, train, adapter)
            sigma, space = state["scales"], "lora"
        else:
            cert = _cell_certificate(ctx, cell, res.model, train)
            sigma, space = cert.sigma.value, cfg.bound.space
    clock.lap("certificate")
    test_losses = example_losses(tok, ctx.task.test_set, cfg.bound.loss, judge=ctx.task.judge, evaluation=cfg.eval)
    rows, items = evaluate_test_items(ctx, res.model, tok, cell.id, test_losses)
    clock.lap("test_evaluation")
    stoch = stochastic_risk(res.model, test_losses, sigma, space, seed=10_007 + cell.seed)
    clock.lap("stochastic_test_risk")
    label_free = {}
    if cfg.label_free.source or cfg.label_free.pool:
        tokens = [test_losses.outputs[i] for i in range(test_losses.n)] if test_losses.outputs else None
        label_free = collect_cell(ctx, cell, res.model, tok, sigma, space, tokens)
        clock.lap("label_free")
    return CellRecord.for_cell(
        cell,
        loss=cert.loss,  # the one loss of the bound, the stochastic test risk and the report
        rows=rows,
        items=items,
        terms=cell_terms(cert, stoch),
        sigma_grid=cert.grid,
        ledger=cert.delta.ledger,
        training=res.log | {"stage_seconds": clock.seconds},
        seconds=time.perf_counter() - t0,
        label_free=label_free,
    )


class _Stages:
    """Wall seconds of each stage of a cell, in order (the record's ``training.stage_seconds``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t, 3)
        self._t = now


def _two_stage(ctx: SweepContext, cell: Cell, model, train: list, adapter: Path):
    """Stages 2–4 of the data-dependent prior on ``model`` (P, trained on the prior's part); saves
    the posterior mean Q as the cell's adapter with its scales, σ_p and KL beside it."""
    cfg = ctx.cfg
    _, tok = ctx.bases[cell.base]
    cert, state = certify_two_stage(
        model, tok, train, ctx.task.test_set, prior=cfg.prior, bound=cfg.bound, tv=cfg.tv, evaluation=cfg.eval,
        settings=CertifySettings(judge=ctx.task.judge, init=adapter / "prior" / INIT_FILE, seed=cell.seed),
    )  # fmt: skip
    model.save_pretrained(adapter)
    shutil.copy(adapter / "prior" / INIT_FILE, adapter / INIT_FILE)
    save_posterior_state(state, adapter)
    return cert, state


def certify_cell(run_dir: str | Path, cell_id: str, *, progress: bool = False):
    """The certificate of one finished cell of a sweep, recomputed from its adapter, its training
    examples (redrawn exactly as the sweep drew them) and the sweep's test set and settings."""
    out = Path(run_dir)
    cfg, _ = folder_config(out)
    cell = find_cell(cfg, cell_id, str(out))
    adapter = out / "adapters" / cell.id
    if not (adapter / "adapter_config.json").is_file():
        raise ValueError(f"cell {cell_id!r} has no saved adapter under {str(adapter)!r}; run the sweep first")
    ctx = sweep_context(cfg, out)
    train = ctx.task.train_examples(cell)
    if cfg.prior.kind != "two_stage":
        return _cell_certificate(ctx, cell, adapter, train, progress=progress)
    base_dir, tok = ctx.bases[cell.base]
    model = attach_adapter(load_causal_lm(base_dir), adapter, base_name=str(base_dir))
    return recertify_two_stage(
        model, adapter / "prior", tok, train, ctx.task.test_set, bound=cfg.bound, tv=cfg.tv, evaluation=cfg.eval,
        state=load_posterior_state(adapter), settings=CertifySettings(judge=ctx.task.judge, seed=cell.seed),
    )  # fmt: skip


def _cell_certificate(ctx: SweepContext, cell: Cell, adapter, train: list, *, progress: bool = False):
    """Every bound term of a cell comes from certify(), the same code a user calls for one adapter,
    with the sweep's bound, TV, evaluation settings and judge (``adapter``: a model or its folder)."""
    cfg = ctx.cfg
    base_dir, tok = ctx.bases[cell.base]
    init = ctx.out / "adapters" / cell.id / INIT_FILE
    return certify(
        base_dir,
        adapter,
        train,
        ctx.task.test_set,
        bound=cfg.bound,
        tv=cfg.tv,
        evaluation=cfg.eval,
        settings=CertifySettings(
            judge=ctx.task.judge,
            seed=cell.seed,
            tokenizer=tok,
            init=init if cfg.bound.space == "lora" else None,
            progress=progress,
        ),
    )


def evaluate_test_items(
    ctx: SweepContext, model, tok, model_name: str, losses=None
) -> tuple[list[dict], dict[str, list]]:
    """Tidy per-slice rows of ``model`` on every test op slice, and its per-item results (slice,
    token_error, exact_match, answer_correct) for the bootstrap and IRT. With the test set's
    answer_error ``losses``, the model's generations are computed there once and kept, so its
    posterior draws are verified against them; an item whose teacher-forced pass matches its
    reference exactly is not decoded (that match proves the greedy answer is the reference)."""
    e, slices = ctx.cfg.eval, ctx.task.test_slices
    shared = losses is not None and e.generate and losses.outputs is not None
    items = evaluate_items(
        model,
        tok,
        slices,
        generate=e.generate and not shared,
        judge=ctx.task.judge,
        batch_size=e.batch_size,
        max_new_tokens=e.max_new_tokens,
    )
    if shared:  # answers once, in the losses; an exact teacher-forced match already proves one
        where = {id(ex): k for k, ex in enumerate(ex for exs in slices.values() for ex in exs)}
        matched = [items["exact_match"][where[id(ex)]] for ex in ctx.task.test_set]
        losses.point(model, proved_by_teacher_forcing(tok, ctx.task.test_set, matched, e.max_new_tokens))
        text = {id(ex): tok.decode(losses.outputs[i], skip_special_tokens=True) for i, ex in enumerate(ctx.task.test_set)}
        if ctx.task.judge is not None:
            ordered = [ex for exs in slices.values() for ex in exs]
            items["answer_correct"] = [float(bool(ctx.task.judge(ex, text[id(ex)]))) for ex in ordered]
    compact = {"slice": items["slice"]} | {k: [round(v, 6) for v in items[k]] for k in ITEM_METRICS if k in items}
    return slice_rows(items, model_name), compact


def base_record(ctx: SweepContext, name: str) -> CellRecord:
    """A base model's evaluation record (rows and items), the reference of per-slice changes."""
    base_dir, tok = ctx.bases[name]
    rows, items = evaluate_test_items(ctx, load_causal_lm(base_dir), tok, f"{name}__base")
    return CellRecord.for_base(name, rows, items)


def write_record(out: Path, rec: CellRecord) -> None:
    """Write a finished record as ``out/cells/<id>.json`` (atomically) and forget any failure of it."""
    atomic_write(out / "cells" / f"{rec.id}.json", json.dumps(rec.to_dict()))
    clear_failure(out, rec.id)


def _write_base_cells(ctx: SweepContext, state: FolderState) -> None:
    """Base evaluations are cells too (one per base), so every shard's report has the reference."""
    for b in ctx.cfg.bases:
        bpath = ctx.out / "cells" / f"{b.name}__base.json"
        if read_cell(bpath, state) is None:
            write_record(ctx.out, base_record(ctx, b.name).stamped(state.stamp(b.name)))


def cell_summary(rec: CellRecord) -> str:
    """The one line a finished cell prints. A vacuous bound (U_MC + G_gen ≥ 1: the certificate
    says nothing) is named as such rather than printed as a small G_gen, and so is a total above 1."""
    t = rec.terms
    g_gen = "G_gen vacuous (bound = 1)" if is_vacuous(t["mc_risk_upper"], t["g_gen"]) else f"G_gen {t['g_gen']:.3f}"
    total = f"two-gap total {t['total']:.3f} (an estimate" + ("; above 1, it says nothing)" if t["total"] > 1 else ")")
    return (
        f"cell {rec.id}: train risk {t['point_train_risk']:.3f} (fine-tuned model), {t['mc_risk_upper']:.3f} "
        f"(posterior, MC upper bound), KL {t['kl']:.3g} nats, {g_gen}, TV proxy {t['tv']:.3f}, {total} "
        f"({rec.seconds:.0f} s)"
    )


def run_sweep(
    cfg: SweepConfig | dict,
    out_dir: str | Path,
    *,
    shard: str | tuple[int, int] = (0, 1),
    only: Mapping[str, Iterable[object]] | None = None,
    update: bool = False,
    progress: bool = True,
    on_cell: Callable[[Cell, CellRecord], None] | None = None,
) -> dict:
    """Run (or resume) the sweep into ``out_dir``. Returns a summary of what ran and what was skipped.

    ``only`` runs a part of the grid first (see :func:`~pacbayes_sft.sweep.cells.select_cells`); a
    later run without it completes the same folder. A folder made by another config is refused
    unless ``update``: then it switches to this config and reruns only the cells whose inputs
    changed (see :mod:`pacbayes_sft.sweep.store`)."""
    cfg = normalise_config(cfg)
    i, n_shards = parse_shard(shard)
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    state = claim_folder(out, cfg, update=update)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    ctx = sweep_context(cfg, out)
    grid = cells_of(cfg)
    selected = select_cells(grid, only)
    mine = [c for k, c in enumerate(selected) if k % n_shards == i]
    todo = [c for c in mine if read_cell(out / "cells" / f"{c.id}.json", state) is None]
    summary = {"cells": len(grid), "selected": len(selected), "shard": [i, n_shards], "in_shard": len(mine)}
    summary |= {"skipped": len(mine) - len(todo), "ran": 0}
    if i == 0:
        _write_base_cells(ctx, state)
    # disable=None: bars on a terminal only, so logs and CI output hold just the result lines
    bar = tqdm(todo, desc="cells", unit="cell", disable=None if progress else True, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(cell.id, refresh=True)
        rec = run_cell(ctx, cell, progress=progress).stamped(state.stamp(cell.base))
        write_record(out, rec)
        summary["ran"] += 1
        log.info(cell_summary(rec))
        if on_cell is not None:
            on_cell(cell, rec)
    return summary
