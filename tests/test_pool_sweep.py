"""A sweep that collects the labelled pool: every cell judges the same held-out problems of every
test slice, and the reweighted estimators read them back with the task's prompts."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pacbayes_sft.data.igsm_verify import igsm_judge
from pacbayes_sft.estimators.answers import collect_answers, igsm_extractor
from pacbayes_sft.estimators.target_risk import SliceWeights
from pacbayes_sft.report.label_free import estimates_table
from pacbayes_sft.sweep import cells_of, load_config, run_sweep, sweep_context
from pacbayes_sft.sweep.config import LabelFreeCollection, cell_hash
from pacbayes_sft.sweep.label_free import cell_estimates, task_examples
from pacbayes_sft.sweep.store import folder_config, valid_cells
from pacbayes_sft.training.models import load_causal_lm

QUICK = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "quick.yaml"


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool_run")
    cfg = dataclasses.replace(
        load_config(QUICK), objectives=["sft"], budgets=[8], buckets={"easy": [1], "hard": [3]},
        label_free=LabelFreeCollection(source=0, pool=6),
    )  # fmt: skip
    run_sweep(cfg, out, progress=False)
    return out, cfg


def test_every_cell_judges_the_same_pool_of_every_test_slice(pool_run):
    out, cfg = pool_run
    _, state = folder_config(out)
    recs = [r for r in valid_cells(out, state) if not r.is_base]
    assert len(recs) == 2 and all(set(r.label_free) == {"pool"} for r in recs)
    ctx = sweep_context(cfg, out)
    pool = ctx.task.pool_examples(6)
    assert [p.op for p in pool] == [1] * 6 + [2] * 6 + [3] * 6
    trained = {p.prompt for c in cells_of(cfg) for p in ctx.task.train_examples(c)}
    assert not trained & {p.prompt for p in pool}
    # the stored correctness is the plain greedy answer judged by the verifier (reference recomputed here)
    rec = recs[0]
    base_dir, tok = ctx.bases[rec.base]
    from pacbayes_sft.adapters import attach_adapter

    model = attach_adapter(load_causal_lm(base_dir), out / "adapters" / rec.id)
    ref = collect_answers(model, tok, pool, judge=igsm_judge(cfg.task.modulus), extract=igsm_extractor(cfg.task.modulus),
                          max_new_tokens=cfg.eval.max_new_tokens, batch_size=8).correct  # fmt: skip
    assert rec.label_free["pool"]["correct"] == [int(c) for c in ref]


def test_the_reweighted_rows_come_back_from_the_record_and_the_task(pool_run):
    out, cfg = pool_run
    _, state = folder_config(out)
    rec = next(r for r in valid_cells(out, state) if not r.is_base)
    ctx = sweep_context(cfg, out)
    cell = next(c for c in cells_of(cfg) if c.id == rec.id)
    examples = task_examples(ctx, cell)
    rows = {r["name"]: r for r in cell_estimates(rec, examples=examples, n_boot=50)}
    assert set(rows) == {"iw", "iw_slices"}  # no source collected: nothing else has inputs
    pool = examples["pool"]
    errors = 1 - np.asarray(rec.label_free["pool"]["correct"], dtype=float)
    direct = SliceWeights(random_state=int(rec.seed)).fit([p.prompt for p in pool], [p.op for p in pool],
                                                           [p.prompt for p in examples["test"]])  # fmt: skip
    assert rows["iw_slices"]["estimate"] == pytest.approx(direct.risk(errors, n_boot=50, random_state=int(rec.seed)).estimate)
    table = estimates_table(out, mixtures=("uniform",), n_boot=50)
    assert {"iw", "iw_slices", "total:tv"} <= set(table["name"])
    assert not table["estimate"].isna().any()


def test_the_pool_size_enters_the_hash_only_when_it_is_set():
    cfg = load_config(QUICK)
    with_pool = dataclasses.replace(cfg, label_free=dataclasses.replace(cfg.label_free, pool=6))
    same = dataclasses.replace(cfg, label_free=dataclasses.replace(cfg.label_free, pool=0))
    assert cell_hash(same, "tiny") == cell_hash(cfg, "tiny") != cell_hash(with_pool, "tiny")
    with pytest.raises(ValueError, match=r"label_free\.pool must be an integer >= 0"):
        LabelFreeCollection(pool=-1)


def test_a_dataset_pool_holds_the_rows_no_cell_trains_on_and_names_an_empty_bin():
    from types import SimpleNamespace

    from pacbayes_sft.sweep.tasks import DatasetTask

    cfg = dataclasses.replace(load_config(QUICK), budgets=[8, 16], buckets={"easy": [1], "hard": [3]}, seeds=[0, 1])
    task = DatasetTask(cfg)
    task.pool = [SimpleNamespace(prompt=f"b{b}-{i}", op=b) for b in (1, 2, 3) for i in range(40)]
    pool = task.pool_examples(5)
    assert [p.op for p in pool] == [1] * 5 + [2] * 5 + [3] * 5
    trained = {p.prompt for c in cells_of(cfg) for p in task.train_examples(c)}
    assert len(trained) > 16 and not trained & {p.prompt for p in pool}
    task.pool = [p for p in task.pool if p.op != 2]
    with pytest.raises(ValueError, match=r"label_free\.pool: .* no row of difficulty bin 2"):
        task.pool_examples(5)
