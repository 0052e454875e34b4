"""Answers and confidences from a model, estimate_test_risk and `pacbayes-sft estimate-risk`,
on the shipped 1M-parameter iGSM base with a LoRA adapter trained in seconds."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pacbayes_sft
from pacbayes_sft.bounds import LabelFreeEstimate
from pacbayes_sft.certify import EvalConfig, LabelFreeConfig, TVConfig, estimate_test_risk
from pacbayes_sft.certify.label_free import COLUMNS, load_checked
from pacbayes_sft.cli import main
from pacbayes_sft.cli.estimate import _held_out_source
from pacbayes_sft.data import generate
from pacbayes_sft.data.igsm_verify import igsm_judge
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.estimators.answers import (
    RowDraws,
    answer_token_span,
    canonical_answer,
    collect_answers,
    collect_draws,
    continuation_logprobs,
    igsm_extractor,
)
from pacbayes_sft.estimators.label_free import EstimatorSpec, register_estimator, unregister_estimator
from pacbayes_sft.lm.scoring import generate_texts
from pacbayes_sft.posteriors import GaussianPosterior
from pacbayes_sft.sweep import cells_of, load_config, sweep_context
from pacbayes_sft.sweep.store import claim_folder
from pacbayes_sft.training.models import build_model, tiny_config
from pacbayes_sft.training.sft import SFTConfig, finetune

BASE = Path(pacbayes_sft.__file__).parent / "assets" / "base_igsm"
QUICK = Path(__file__).resolve().parent.parent / "experiments" / "configs" / "quick.yaml"
GEN = {"max_new_tokens": 48, "batch_size": 16}


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + ("\n" if rows else ""))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimate")
    tok = load_tokenizer(BASE)
    train = generate(16, [2], split="train", seed=1)
    cfg = SFTConfig(max_steps=4, batch_size=8, progress=False)
    finetune(str(BASE), tok, [p.prompt for p in train], [p.response for p in train], cfg, root / "adapter")
    # bases the adapter does not belong to: fewer layers (same module shapes), a narrower model
    for name, hidden, layers in (("shallow", 128, 2), ("narrow", 64, 2)):
        mc = tiny_config("llama", len(tok), hidden=hidden, layers=layers, heads=4, kv_heads=4, intermediate=4 * hidden)
        build_model(mc, seed=0).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    # the same adapter with an unknown recorded base: only its weights can tell where it belongs
    shutil.copytree(root / "adapter", root / "orphan")
    cfg_path = root / "orphan" / "adapter_config.json"
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()) | {"base_model_name_or_path": "/no/such/base"}))
    source = list(generate(10, [2], split="train", seed=7))
    tests = [p.prompt for p in generate(10, [1, 2], split="test", seed=3)]
    pool = [p for op in (1, 2, 3) for p in generate(12, [op], split="train", seed=50 + op)]
    files = {
        "pool": _jsonl(root / "pool.jsonl", [p.to_dict() for p in pool]),
        "pool_one_slice": _jsonl(root / "pool1.jsonl", [p.to_dict() | {"op": 2} for p in pool]),
        "pool_no_slice": _jsonl(root / "pool0.jsonl", [{k: v for k, v in p.to_dict().items() if k != "op"} for p in pool]),
        "blank_prompts": _jsonl(root / "blank.jsonl", [{"question": " "} for _ in tests]),
        "source": _jsonl(root / "source.jsonl", [p.to_dict() for p in source]),
        "prompts": _jsonl(root / "questions.jsonl", [{"question": q} for q in tests]),
        "empty": _jsonl(root / "empty.jsonl", []),
        "no_answer": _jsonl(root / "no_answer.jsonl", [{"prompt": tests[0]}]),
    }
    model, _ = load_checked(BASE, root / "adapter")
    return {"root": root, "tok": tok, "model": model, "source": source, "tests": tests, "files": files, "pool": pool}


def _reference_logprob(model, tok, prompt, text, *, eos=True):
    """ln p(text [<eos>] | <bos> prompt) in nats from a single unpadded forward pass."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    ids = torch.tensor([[tok.bos_token_id, *p, *r]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return float(sum(logp[len(p) + t, tok_id] for t, tok_id in enumerate(r)))


def test_canonical_answers_compare_as_the_scorer_does():
    assert canonical_answer("1,234") == canonical_answer(1234) == "1234"
    assert canonical_answer("0.50") == canonical_answer("1/2") == canonical_answer("\\frac{1}{2}") == "1/2"
    assert canonical_answer("  Paris. ") == canonical_answer("paris") == "paris"
    assert canonical_answer(None) is None and canonical_answer("  ") is None


def test_confidence_is_the_probability_of_the_own_generation(env):
    model, tok, prompts = env["model"], env["tok"], env["tests"][:5]
    g = collect_answers(model, tok, prompts, **GEN)
    assert g.texts == generate_texts(model, tok, prompts, max_new_tokens=GEN["max_new_tokens"], keep_order=True)
    for p, t, lc, c in zip(prompts, g.texts, g.log_confidences, g.confidences):
        assert lc == pytest.approx(_reference_logprob(model, tok, p, t), abs=1e-4)
        assert c == pytest.approx(np.exp(lc)) and 0 < c <= 1
    # <eos> is scored: after half a solution it is improbable, so leaving it out would show
    halves = [tok.decode(tok(t, add_special_tokens=False)["input_ids"][:8]) for t in g.texts]
    lp = continuation_logprobs(model, tok, prompts, halves, max_new_tokens=GEN["max_new_tokens"])
    for p, h, v in zip(prompts, halves, lp):
        assert v == pytest.approx(_reference_logprob(model, tok, p, h), abs=1e-4)
        assert v < _reference_logprob(model, tok, p, h, eos=False) - 0.1
    cut = collect_answers(model, tok, prompts[:2], max_new_tokens=3, batch_size=2)  # cut off: no <eos> scored
    for p, t, lc in zip(prompts, cut.texts, cut.log_confidences):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 3
        assert lc == pytest.approx(_reference_logprob(model, tok, p, t, eos=False), abs=1e-4)


def test_the_answer_confidence_is_the_probability_of_the_answer_tokens_given_the_chain(env):
    model, tok, prompts = env["model"], env["tok"], env["tests"]
    g = collect_answers(model, tok, prompts, extract=igsm_extractor(), **GEN)
    with_answer = 0
    for p, t, a, ac, c in zip(prompts, g.texts, g.answers, g.answer_confidences, g.confidences):
        if a is None:
            assert ac == 0.0
            continue
        with_answer += 1
        # reference: the answer's characters at the end of the text, scored given everything before them
        pos = t.rfind(a)
        chain, answer = t[:pos], t[pos : pos + len(a)]
        ref = _reference_logprob(model, tok, p, chain + answer, eos=False) - _reference_logprob(model, tok, p, chain, eos=False)
        assert ac == pytest.approx(np.exp(ref), rel=1e-4) and c <= ac + 1e-12  # a part is at least as likely as the whole
    assert with_answer >= 3  # the test can fail: most of these adapter's answers are there
    assert answer_token_span(tok, [5, 6], "x y", None) is None and answer_token_span(tok, [5, 6], "x y", "z") is None


def test_each_row_generates_and_is_scored_under_its_own_draw(env):
    model, tok, prompts = env["model"], env["tok"], env["tests"][:4]
    post = GaussianPosterior(model, 0.03, "delta", seed=0)
    draws = [5, 9, 2, 7]
    g = collect_answers(model, tok, prompts, draws=RowDraws(post, draws), **GEN)
    for p, k, t, lc in zip(prompts, draws, g.texts, g.log_confidences):
        with post.sample(k) as mdl:  # one draw at a time, one prompt at a time
            assert t == generate_texts(mdl, tok, [p], max_new_tokens=GEN["max_new_tokens"])[0]
            assert lc == pytest.approx(_reference_logprob(mdl, tok, p, t), abs=1e-3)
    assert g.draws == draws and g.correct is None


def test_draws_are_laid_out_without_reuse_and_answers_agree_with_the_judge(env):
    model, tok, source = env["model"], env["tok"], env["source"]
    post = GaussianPosterior(model, 0.03, "delta", seed=1)
    res = collect_draws(post, tok, source, draws=2, first_draw=100, judge=igsm_judge(), extract=igsm_extractor(), **GEN)
    assert [r.draws for r in res] == [list(range(100, 110)), list(range(110, 120))]
    for r in res:
        assert r.correct == [int(a == str(p.answer)) for a, p in zip(r.answers, source)]
    with pytest.raises(ValueError, match="draws must be an integer >= 2"):
        collect_draws(post, tok, source, draws=1)


def test_estimate_test_risk_end_to_end(env):
    adapter = env["root"] / "adapter"
    df = estimate_test_risk(
        BASE, adapter, env["tests"], source=env["source"], judge=igsm_judge(), extract=igsm_extractor(),
        sigma=0.03, seeds_adapters=[adapter], evaluation=EvalConfig(**GEN), tv=TVConfig(permutations=20), n_boot=100,
    )  # fmt: skip
    assert list(df.columns) == list(COLUMNS)
    assert list(df["estimator"]) == [
        "no_shift", "two_gap_tv", "atc", "doc", "atc_answer", "doc_answer", "da_2013", "da_2016", "half_disagreement",
        "gde_posterior", "seed_disagreement",
    ]  # fmt: skip
    assert df.loc[df["certified"], "estimator"].tolist() == ["half_disagreement"]
    assert ((0 <= df["lower"]) & (df["lower"] <= df["upper"]) & (df["upper"] <= 1)).all()
    by = df.set_index("estimator")
    assert by.loc["seed_disagreement", "estimate"] == 0.0  # the same adapter twice never disagrees
    # no_shift is the adapter's error on the source, recomputed here with the plain generator and judge
    texts = generate_texts(
        env["model"], env["tok"], [p.prompt for p in env["source"]], max_new_tokens=GEN["max_new_tokens"]
    )
    judge = igsm_judge()
    assert by.loc["no_shift", "estimate"] == pytest.approx(
        np.mean([not judge(p, t) for p, t in zip(env["source"], texts)])
    )
    assert by.loc["two_gap_tv", "estimate"] >= by.loc["no_shift", "estimate"]
    assert "σ = 0.03" in by.loc["da_2013", "risk_of"] and by.loc["atc", "risk_of"] == "adapter"


def test_the_pool_estimators_reweight_the_adapters_own_pool_errors(env):
    """iw_slices and iw from estimate_test_risk equal the weights fitted here on the pool's errors
    recomputed with the plain generator and judge (the collector adds nothing of its own)."""
    from pacbayes_sft.estimators.target_risk import DensityRatioWeights, SliceWeights

    pool = env["pool"]
    df = estimate_test_risk(
        BASE, env["root"] / "adapter", env["tests"], pool=pool, judge=igsm_judge(), extract=igsm_extractor(),
        evaluation=EvalConfig(**GEN), n_boot=50,
    )  # fmt: skip
    assert df["estimator"].tolist() == ["iw_slices", "iw"] and not df["certified"].any()
    texts = generate_texts(env["model"], env["tok"], [p.prompt for p in pool], max_new_tokens=GEN["max_new_tokens"])
    errors = [float(not igsm_judge()(p, t)) for p, t in zip(pool, texts)]
    prompts, ops = [p.prompt for p in pool], [p.op for p in pool]
    boot = {"level": 0.95, "n_boot": 50, "random_state": 0}
    by = df.set_index("estimator")
    slices = SliceWeights(random_state=0).fit(prompts, ops, env["tests"]).risk(errors, **boot)
    ratio = DensityRatioWeights(random_state=0).fit(prompts, env["tests"]).risk(errors, **boot)
    assert by.loc["iw_slices", "estimate"] == pytest.approx(slices.estimate)
    assert by.loc["iw", "estimate"] == pytest.approx(ratio.estimate)
    assert (by["n_pool"] == len(pool)).all() and (by["n_source"] == 0).all()


def _pool_error(inputs, settings):
    """A toy estimator (not in the package) reading the labelled pool and the target prompts."""
    e = 1.0 - float(np.mean(inputs.source_correct))
    details = {"n_source": float(len(inputs.source_prompts)), "n_target": float(len(inputs.target_prompts))}
    return LabelFreeEstimate("toy_pool", e, e, e, settings.level, False, "the pool's error", details)


@pytest.fixture
def toy_pool():
    needs = {"source_correct", "source_prompts", "target_prompts"}
    yield register_estimator(EstimatorSpec("toy_pool", needs, "adapter", _pool_error, "the pool's error"))
    unregister_estimator("toy_pool")


def test_a_registered_estimator_shows_up_in_estimate_test_risk(env, toy_pool):
    config = LabelFreeConfig(estimators=["no_shift", "toy_pool"], evaluation=EvalConfig(**GEN), n_boot=50)
    df = estimate_test_risk(
        BASE, env["root"] / "adapter", env["tests"], source=env["source"], judge=igsm_judge(), extract=igsm_extractor(),
        config=config,
    )  # fmt: skip
    by = df.set_index("estimator")
    assert list(df["estimator"]) == ["no_shift", "toy_pool"] and by.loc["toy_pool", "risk_of"] == "adapter"
    assert by.loc["toy_pool", "estimate"] == pytest.approx(by.loc["no_shift", "estimate"])
    assert by.loc["toy_pool", "n_source"] == len(env["source"]) and by.loc["toy_pool", "n_target"] == len(env["tests"])
    # by default it runs whenever its inputs can be collected: with a source, not without
    cfg = LabelFreeConfig(evaluation=EvalConfig(**GEN), tv=TVConfig(permutations=10), n_boot=20)
    every = estimate_test_risk(
        BASE, env["root"] / "adapter", env["tests"], source=env["source"], judge=igsm_judge(),
        extract=igsm_extractor(), config=cfg,
    )  # fmt: skip
    assert every["estimator"].tolist() == ["no_shift", "two_gap_tv", "atc", "doc", "atc_answer", "doc_answer", "toy_pool"]
    with pytest.raises(ValueError, match="estimators: 'toy_pool' needs source"):
        estimate_test_risk(BASE, env["root"] / "adapter", env["tests"], estimators=["toy_pool"])


def test_config_and_keywords_give_one_setting_each():
    with pytest.raises(ValueError, match="unknown option 'sigmaa'"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], sigmaa=0.1)
    with pytest.raises(ValueError, match="config must be a LabelFreeConfig"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], config={"sigma": 0.1})
    with pytest.raises(ValueError, match="estimators: unknown estimator 'nope'"):
        LabelFreeConfig(estimators=["nope"])
    with pytest.raises(ValueError, match="sigma must be"):
        LabelFreeConfig(sigma=-1.0)
    with pytest.raises(ValueError, match="space must be"):
        LabelFreeConfig(space="weights")
    # a keyword replaces the config's value; the rest of the config stays
    cfg = LabelFreeConfig(estimators=["half_disagreement"], sigma=0.1, draws=3)
    with pytest.raises(ValueError, match="estimators: 'half_disagreement' needs sigma"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], config=cfg, sigma=0.0)
    assert LabelFreeConfig(sigma={"layer.0": 0.1}).has_draws and not LabelFreeConfig(sigma=0.0).has_draws


def test_missing_inputs_are_refused_before_any_model_is_loaded():
    with pytest.raises(ValueError, match="estimators: 'atc' needs source"):
        estimate_test_risk("/no/base", "/no/adapter", ["a prompt"], estimators=["atc"])
    with pytest.raises(ValueError, match="estimators: 'half_disagreement' needs sigma"):
        estimate_test_risk("/no/base", "/no/adapter", ["a prompt"], estimators=["half_disagreement"], sigma=0.0)
    with pytest.raises(ValueError, match="prompts"):
        estimate_test_risk("/no/base", "/no/adapter", [])
    with pytest.raises(ValueError, match=r"source\[0\] has no 'answer'"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], source=[{"prompt": "q"}])
    with pytest.raises(ValueError, match="draws"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], sigma=0.1, draws=1)
    with pytest.raises(ValueError, match="n_boot"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], n_boot=1)
    with pytest.raises(ValueError, match="beta"):
        estimate_test_risk("/no/base", "/no/adapter", ["p"], beta=-1.0)


@pytest.mark.parametrize(
    "base,adapter,match",
    [
        ("shallow", "adapter", "was trained on base"),  # recorded base known, its config differs
        ("shallow", "orphan", "modules not in the base"),  # same shapes, fewer layers: peft only warns
        ("narrow", "orphan", "does not fit"),  # tensor sizes differ
    ],
)
def test_an_adapter_of_another_base_is_refused(env, base, adapter, match):
    with pytest.raises(ValueError, match=match):
        load_checked(env["root"] / base, env["root"] / adapter)


def test_cli_prints_one_row_per_estimator_and_writes_the_table(env, tmp_path, capsys):
    out = tmp_path / "risk.csv"
    f = env["files"]
    argv = [
        "estimate-risk", "--base", str(BASE), "--adapter", str(env["root"] / "adapter"), "--prompts", str(f["prompts"]),
        "--prompt-column", "question", "--source", str(f["source"]), "--estimators", "no_shift,two_gap_tv,atc,doc",
        "--eval-max-new-tokens", "48", "--tv-permutations", "10", "--n-boot", "50", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "on 10 prompts; labelled source items: 10" in printed
    table = pd.read_csv(out)
    assert list(table["estimator"]) == ["no_shift", "two_gap_tv", "atc", "doc"]
    assert all(name in printed for name in table["estimator"])


@pytest.mark.parametrize(
    "case,match",
    [
        ("no_column", "--prompts: .* has no column 'prompt'"),
        ("empty", "--prompts: .* holds no rows"),
        ("other_base", "was trained on base"),
        ("bad_shapes", "does not fit"),
        ("run_without_cell", "--run and --cell go together"),
        ("source_without_answer", "--source: row 0 .* has no 'answer'"),
        ("pool_without_answer", "--pool: row 0 .* has no 'answer'"),
        ("pool_one_slice", "--pool: .* holds one slice only"),
        ("pool_without_slice", "--pool: row 0 .* has no slice in column 'op'"),
        ("blank_prompts", "--prompts: row 0 .* has no prompt text"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(env, tmp_path, capsys, case, match):
    root, f = env["root"], env["files"]
    base, adapter, prompts = (
        str(BASE),
        str(root / "adapter"),
        ["--prompts", str(f["prompts"]), "--prompt-column", "question"],
    )
    if case == "no_column":
        prompts = ["--prompts", str(f["prompts"])]
    elif case == "empty":
        prompts = ["--prompts", str(f["empty"])]
    elif case == "other_base":
        base = str(root / "shallow")
    elif case == "bad_shapes":
        base, adapter = str(root / "narrow"), str(root / "orphan")
    out = tmp_path / "risk.csv"
    argv = ["estimate-risk", "--base", base, "--adapter", adapter, *prompts, "--out", str(out), "--quiet"]
    if case == "run_without_cell":
        argv += ["--run", str(tmp_path)]
    elif case == "source_without_answer":
        argv += ["--source", str(f["no_answer"])]
    elif case == "pool_without_answer":
        argv += ["--pool", str(f["no_answer"])]
    elif case == "pool_one_slice":
        argv += ["--pool", str(f["pool_one_slice"])]
    elif case == "pool_without_slice":
        argv += ["--pool", str(f["pool_no_slice"])]
    elif case == "blank_prompts":
        argv[argv.index(str(f["prompts"]))] = str(f["blank_prompts"])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(match, err[0]), err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A sweep folder with one finished adapter (no records): enough for --run/--cell."""
    out = tmp_path_factory.mktemp("run")
    cfg = dataclasses.replace(load_config(QUICK), objectives=["sft"], budgets=[8], seeds=[0], buckets={"easy": [1]})
    claim_folder(out, cfg)
    ctx = sweep_context(cfg, out)
    (cell,) = cells_of(cfg)
    base_dir, tok = ctx.bases[cell.base]
    train = ctx.task.train_examples(cell)
    sft = dataclasses.replace(cfg.sft, max_steps=2, progress=False)
    finetune(
        str(base_dir), tok, [p.prompt for p in train], [p.response for p in train], sft, out / "adapters" / cell.id
    )
    return out, ctx, cell, train


def test_cli_estimates_a_sweep_cell_on_held_out_source_problems(run_dir, capsys):
    out, ctx, cell, train = run_dir
    held = _held_out_source(ctx, cell, 12)
    assert len(held) == 12 and not {p.prompt for p in held} & {p.prompt for p in train}
    # the task's own held-out examples: the next 12 of the cell's training stream
    longer = ctx.task.train_examples(dataclasses.replace(cell, n=cell.n + 12))
    assert [p.prompt for p in held] == [p.prompt for p in ctx.task.held_out_examples(cell, 12)]
    assert [p.prompt for p in held] == [p.prompt for p in longer[cell.n :]]
    argv = ["estimate-risk", "--run", str(out), "--cell", cell.id, "--n-source", "12"]
    assert main([*argv, "--estimators", "no_shift,atc,doc", "--n-boot", "50", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"on {len(ctx.task.test_set)} prompts; labelled source items: 12" in printed and "atc" in printed


def test_cli_draws_only_the_samples_its_estimators_read(run_dir, capsys):
    out, ctx, cell, _ = run_dir
    argv = ["estimate-risk", "--run", str(out), "--cell", cell.id, "--n-pool", "4", "--n-boot", "50", "--quiet"]
    assert main([*argv, "--estimators", "iw_slices"]) == 0
    printed = capsys.readouterr().out
    n_pool = 4 * len(ctx.cfg.test.ops)
    assert f"labelled source items: 0; labelled pool items: {n_pool}" in printed and "iw_slices" in printed
    assert main([*argv, "--estimators", "no_shift", "--n-source", "12"]) == 0
    assert "labelled source items: 12; labelled pool items: 0" in capsys.readouterr().out


def test_cli_a_cell_not_in_the_run_is_one_line_and_exit_2(run_dir, capsys):
    out = run_dir[0]
    assert main(["estimate-risk", "--run", str(out), "--cell", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell 'nope' is not in the sweep" in err[0]
