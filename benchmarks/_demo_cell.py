"""One cell of the demo sweep, set up and trained as the sweep does it: shared by the benchmarks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pacbayes_sft.sweep import load_config
from pacbayes_sft.sweep.cells import find_cell
from pacbayes_sft.sweep.runner import sweep_context
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import FinetuneResult, finetune


def demo_cell(cell_id: str, folder: Path):
    """(config, sweep context, cell, tokenizer, training examples) of the demo's cell ``cell_id``."""
    cfg = load_config("demo")
    ctx = sweep_context(cfg, folder)
    cell = find_cell(cfg, cell_id, "demo")
    return cfg, ctx, cell, ctx.bases[cell.base][1], ctx.task.train_examples(cell)


def train_adapter(ctx, cell, examples: list, out: Path) -> FinetuneResult:
    """The sweep's SFT recipe for ``cell`` on ``examples``, saved to ``out`` (model in eval mode)."""
    base_dir, tok = ctx.bases[cell.base]
    sft = dataclasses.replace(ctx.cfg.sft, objective=cell.objective, seed=cell.seed, progress=False)
    res = finetune(load_causal_lm(base_dir), tok, [e.prompt for e in examples], [e.response for e in examples], sft, out)
    res.model.eval()
    return res
