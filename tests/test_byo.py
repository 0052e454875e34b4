"""Bring your own model and data: the dataset task end to end through the CLI, its refusals, the
context-length accounting and a BPE tokenizer saved and loaded from a path."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from pacbayes_sft.cli import main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from make_byo_example import write  # noqa: E402


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    """A tiny version of the shipped example: data, BPE tokenizer, model, and a config."""
    d = tmp_path_factory.mktemp("byo")
    write(d / "ex", train_per_op=8, test_per_op=4, vocab=300)
    cfg = yaml.safe_load((ROOT / "experiments" / "configs" / "byo_example.yaml").read_text())
    cfg["task"] |= {"train_path": str(d / "ex" / "train.jsonl"), "test_path": str(d / "ex" / "test.jsonl")}
    cfg["bases"] = [{"name": "model", "path": str(d / "ex" / "model")}]
    cfg |= {"budgets": [4, 8, 12], "test": {"ops": [1, 2, 3], "n_per_op": 4, "seed": 0}}
    cfg["bound"] |= {"mc_examples": 4}
    cfg["eval"] |= {"max_new_tokens": 12}
    path = d / "byo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return d, path, cfg


def test_byo_chain_through_the_cli(byo, capsys):
    d, path, _ = byo
    out = d / "run"
    assert main(["sweep", "--config", str(path), "--out", str(out), "--report", "--quiet"]) == 0
    ds = json.loads((out / "dataset.json").read_text())  # the bins, what was dropped, and the counts
    assert len(ds["edges"]) == 2 and ds["dropped_too_long"] == {"train": 0, "test": 0}
    assert sum(ds["pool_per_bin"].values()) == 48 and set(ds["test_per_bin"]) == {"1", "2", "3"}
    md = (out / "report.md").read_text()
    assert "Best difficulty per budget" in md and "loss for risks and bounds: answer_error" in md
    names = {p.name for p in (out / "report").glob("*.png")}
    assert {"score_model_sft.png", "terms_model_sft.png", "slices_model_sft.png", "optimum_vs_n.png"} <= names
    assert "irt_model_sft.png" in names and (out / "items_irt.csv").is_file()  # items rated by its own models
    assert main(["irt", str(out)]) == 0 and "test items rated by 10 models" in capsys.readouterr().out
    assert main(["forecast", str(out), "--budget", "24"]) == 0
    assert "predicted best bucket" in capsys.readouterr().out
    cert_path = d / "cert.json"
    assert main(["certify", "--run", str(out), "--cell", "model__sft__n8__long__s0", "--out", str(cert_path)]) == 0
    doc = json.loads(cert_path.read_text())
    # the data-dependent prior trained on the first half: the bound rests on the other 4
    assert doc["n"] == 4 and doc["loss"] == "answer_error" and doc["prior"]["n_prior"] == 4
    rec = json.loads((out / "cells" / "model__sft__n8__long__s0.json").read_text())
    assert rec["terms"]["kl"] == pytest.approx(doc["kl"]["value_nats"], rel=1e-6)  # the same cell, recomputed


def _cfg(byo, tmp_path, top=None, **task):
    _, _, cfg = byo
    c = json.loads(json.dumps(cfg)) | (top or {})
    c["task"] |= task
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(c))
    return p


@pytest.mark.parametrize(
    "task, top, needle",
    [
        ({"answer_column": "final"}, None, "missing column"),
        ({"difficulty": "column", "difficulty_column": "level"}, None, "missing difficulty column"),
        ({}, {"budgets": [4, 8, 500]}, "fewer than the largest budget"),
        ({}, {"buckets": {"short": [1], "ghost": [7]}}, "'ghost' (bins [7]) holds 0"),
        ({"bins": 12}, None, "test bin 1 is empty"),
        ({"test_path": "nowhere.jsonl"}, None, "does not exist"),
    ],
)
def test_dataset_task_refusals(byo, tmp_path, task, top, needle, capsys):
    cfg = _cfg(byo, tmp_path, top, **task)
    assert main(["sweep", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_base_path_must_be_local_and_tokenizer_needs_a_pad_token(byo, tmp_path, capsys):
    from pacbayes_sft.data.tokenizer import load_tokenizer

    d, _, cfg = byo
    c = json.loads(json.dumps(cfg)) | {"bases": [{"name": "m", "path": "Qwen/Qwen2.5-Math-1.5B"}]}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(c))
    assert main(["sweep", "--config", str(tmp_path / "hub.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    nopad = tmp_path / "nopad"
    tok = load_tokenizer(d / "ex" / "model")
    tok.pad_token = None
    tok.save_pretrained(nopad)
    from pacbayes_sft.training.models import load_causal_lm

    load_causal_lm(d / "ex" / "model").save_pretrained(nopad)
    c = json.loads(json.dumps(cfg)) | {"bases": [{"name": "m", "path": str(nopad)}]}
    (tmp_path / "np.yaml").write_text(yaml.safe_dump(c))
    assert main(["sweep", "--config", str(tmp_path / "np.yaml"), "--out", str(tmp_path / "r2")]) == 2
    assert "no pad token" in capsys.readouterr().err


def test_context_length_accounting(byo, tmp_path):
    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.sweep.config import TaskConfig
    from pacbayes_sft.sweep.tasks import load_split

    d, _, _ = byo
    rows = [json.loads(line) for line in (d / "ex" / "train.jsonl").read_text().splitlines()]
    rows[0]["response"] = "step " * 400  # longer than a 128-token context
    rows[1]["prompt"] = "word " * 400
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = load_tokenizer(d / "ex" / "model")
    task = TaskConfig(kind="dataset", train_path=str(path), test_path=str(path), bins=3)
    split = load_split(path, task, tok, max_tokens=256)

    def n_tokens(r):  # an independent count of <bos> prompt response <eos>
        return 2 + sum(len(tok(r[k], add_special_tokens=False)["input_ids"]) for k in ("prompt", "response"))

    too_long = [r for r in rows if n_tokens(r) > 256]
    assert rows[0] in too_long and rows[1] in too_long
    assert split.dropped_too_long == len(too_long) and len(split.examples) == len(rows) - len(too_long)
    kept = {(e.prompt, e.response) for e in split.examples}  # whole texts: nothing was truncated
    assert kept == {(r["prompt"], r["response"]) for r in rows if n_tokens(r) <= 256}
    assert sorted({e.op for e in split.examples}) == [1, 2, 3]


def test_bpe_tokenizer_round_trip_from_path(tmp_path):
    from pacbayes_sft.data.tokenizer import load_tokenizer, train_bpe_tokenizer

    texts = ["What is 3 plus 4? The answer is 0.", "Compute \\boxed{\\frac{1}{2}} twice: 1."]
    tok = train_bpe_tokenizer(texts * 5, 300, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tok.save_pretrained(tmp_path)
    back = load_tokenizer(tmp_path)
    for t in texts:
        ids = back(t, add_special_tokens=False)["input_ids"]
        assert ids == tok(t, add_special_tokens=False)["input_ids"]
        assert back.decode(ids) == t
    assert back.pad_token_id == 0 and back.bos_token_id == 1 and back.eos_token_id == 2
    assert back.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"


def test_irt_difficulty_from_a_response_table_recovers_the_truth(byo, tmp_path):
    """difficulty: irt fits a 2PL to models' answers; simulated with known item difficulties."""
    import numpy as np
    from scipy.stats import spearmanr

    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.sweep.config import TaskConfig
    from pacbayes_sft.sweep.tasks import load_split

    d, _, _ = byo
    rows = [json.loads(line) for line in (d / "ex" / "train.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(0)
    truth = {r["prompt"]: float(r["op"]) - 3.5 + 0.3 * rng.standard_normal() for r in rows}
    ability = rng.normal(0, 1.5, size=300)
    table = [
        {"subject": s, "item": p, "correct": int(rng.random() < 1 / (1 + np.exp(-(a - b))))}
        for s, a in enumerate(ability)
        for p, b in truth.items()
    ]
    resp = tmp_path / "responses.jsonl"
    resp.write_text("".join(json.dumps(t) + "\n" for t in table))
    task = TaskConfig(kind="dataset", train_path="x", test_path="x", difficulty="irt", irt_responses=str(resp), bins=3)
    split = load_split(d / "ex" / "train.jsonl", task, load_tokenizer(d / "ex" / "model"), max_tokens=512)
    fitted = [e.difficulty for e in split.examples]
    assert spearmanr(fitted, [truth[e.prompt] for e in split.examples])[0] > 0.9
    assert spearmanr([e.op for e in split.examples], [truth[e.prompt] for e in split.examples])[0] > 0.8
    resp.write_text("".join(json.dumps(t) + "\n" for t in table if t["item"] != rows[0]["prompt"]))
    with pytest.raises(ValueError, match=r"1 of \d+ examples have no rating"):
        load_split(d / "ex" / "train.jsonl", task, load_tokenizer(d / "ex" / "model"), max_tokens=512)


def test_difficulty_measured_by_the_base_model(byo):
    """base_nll is the base's teacher-forced NLL per response token (checked against a direct
    log-softmax); base_pass_rate is 1 - the share of k = 4 samples the scorer accepts."""
    import torch

    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.sweep.config import TaskConfig
    from pacbayes_sft.sweep.tasks import load_split
    from pacbayes_sft.training.models import load_causal_lm

    d, _, _ = byo
    tok, model = load_tokenizer(d / "ex" / "model"), load_causal_lm(d / "ex" / "model").eval()
    path = d / "ex" / "test.jsonl"
    nll = load_split(
        path,
        TaskConfig(kind="dataset", train_path="x", test_path="x", difficulty="base_nll", bins=3),
        tok,
        512,
        model=model,
    )
    e = nll.examples[0]
    p_ids = tok(e.prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(e.response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tok.bos_token_id, *p_ids, *r_ids, tok.eos_token_id]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1], -1)
    targets = ids[0, 1:]
    resp = slice(len(p_ids), ids.shape[1] - 1)  # positions predicting the response and <eos>
    ref = -logp[resp].gather(1, targets[resp, None]).mean().item()
    assert e.difficulty == pytest.approx(ref, rel=1e-4)
    order = sorted(nll.examples, key=lambda x: x.difficulty)
    assert [x.op for x in order] == sorted(x.op for x in order)  # bins follow the difficulty
    task = TaskConfig(kind="dataset", train_path="x", test_path="x", difficulty="base_pass_rate", bins=2)
    rate = load_split(path, task, tok, 512, model=model, max_new_tokens=8)
    assert all(x.difficulty in (0.0, 0.25, 0.5, 0.75, 1.0) for x in rate.examples)
    with pytest.raises(ValueError, match="needs the base model"):
        load_split(path, task, tok, 512)


def test_a_dataset_race_draws_unused_test_rows_until_the_file_is_used_up(byo, tmp_path, capsys):
    """A dataset task races on the test file's rows beyond the committed test set, a bin at a time;
    when a bin has none left the race stops open and says so, exit 0, nothing half-written."""
    decide = {"epsilon": 0.01, "level": 0.9, "round_items": 3, "max_items": 3000}
    cfg = _cfg(byo, tmp_path, {"budgets": [4], "decide": decide})
    out = tmp_path / "run"
    assert main(["sweep", "--config", str(cfg), "--out", str(out), "--decide", "--quiet"]) == 0
    printed = capsys.readouterr().out
    (line,) = [ln for ln in printed.splitlines() if ln.startswith("model/sft/4: ")]
    assert "not decided within" in line and "test pool used up: bin" in line
    (summary,) = (out / "race").glob("*.json")
    doc = json.loads(summary.read_text())
    assert doc["status"] == "done" and doc["result"]["reason"] == "cap" and "used up" in doc["pool_used_up"]
    rounds = sorted((out / "race" / summary.stem).glob("round_*.json"))
    assert len(rounds) == doc["result"]["rounds"]  # every round the race looked at is on disk
    # the fresh rows are the test file's, never the committed test set's
    seen = [json.loads(r.read_text())["losses"] for r in rounds[1:]]
    assert all(len(v) == 3 for loss in seen for v in loss.values())


def test_fresh_rows_are_disjoint_from_the_test_set_and_from_each_other():
    from pacbayes_sft.sweep.dataset import Example, PoolUsedUp, cap_slices, fresh_rows

    test = [Example(f"q{b}-{i}", "r", "a", b, float(b)) for b in (1, 2) for i in range(7)]
    committed = {e.prompt for e in cap_slices(test, [1, 2], 3, seed=5)}
    r1, r2 = (fresh_rows(test, [1, 2], 3, 5, r, 4) for r in (1, 2))
    p1, p2 = {e.prompt for e in r1}, {e.prompt for e in r2}
    assert len(p1) == len(p2) == 4 and not (p1 & committed) and not (p2 & committed) and not (p1 & p2)
    assert [e.op for e in r1] == [1, 1, 2, 2]
    with pytest.raises(PoolUsedUp, match=r"test pool used up: bin 1 has 0 unused test row\(s\), round 3 needs 2"):
        fresh_rows(test, [1, 2], 3, 5, 3, 4)
