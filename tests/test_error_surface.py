"""Error surface: bad input to public functions and CLI verbs gives a clear error, never a traceback or NaN.

Also: safe loading (pickles refused, configs parsed as data) and determinism.
"""

import json
import math

import numpy as np
import pytest
import torch

from pacbayes_sft.cli import main
from pacbayes_sft.data import IGSMConfig, generate, generate_problem, verify
from pacbayes_sft.data.buckets import edge_buckets, quantile_buckets
from pacbayes_sft.data.loaders import load_examples
from pacbayes_sft.data.tokenizer import build_word_tokenizer, load_tokenizer
from pacbayes_sft.estimators import classifier_tv, fit_irt, gaussian_kl, lora_kl, response_matrix
from pacbayes_sft.estimators.difficulty import base_pass_rate, op_count
from pacbayes_sft.posteriors import GaussianPosterior
from pacbayes_sft.training.encoding import encode, length_grouped_batches
from pacbayes_sft.training.models import attach_lora, load_causal_lm, tiny_causal_lm, tiny_config
from pacbayes_sft.training.sft import SFTConfig

TOK = build_word_tokenizer(["a", "b"])

API_CASES = [
    ("generate_problem op 0", lambda: generate_problem(0, 0), "op"),
    ("generate_problem op str", lambda: generate_problem(0, "3"), "op"),
    ("IGSMConfig modulus", lambda: IGSMConfig(modulus=1), "modulus"),
    ("IGSMConfig operators", lambda: IGSMConfig(operators=("/",)), "operators"),
    ("IGSMConfig p_reuse", lambda: IGSMConfig(p_reuse=2.0), "p_reuse"),
    ("IGSMConfig test_fraction", lambda: IGSMConfig(test_fraction=0.0), "test_fraction"),
    ("generate n negative", lambda: generate(-1, 2), "n must"),
    ("generate ops empty", lambda: generate(2, []), "ops"),
    ("verify no query", lambda: verify("a : 1 .", "answer 1"), "prompt"),
    ("quantile_buckets k", lambda: quantile_buckets([1, 2], k=0), "k must"),
    ("quantile_buckets labels", lambda: quantile_buckets([1, 2], k=2, labels=["x"]), "labels"),
    ("edge_buckets labels", lambda: edge_buckets([1], [2], labels=["x"]), "labels"),
    ("load_examples type", lambda: load_examples(42), "source"),
    ("tokenizer duplicate words", lambda: build_word_tokenizer(["a", "a"]), "unique"),
    ("tokenizer special word", lambda: build_word_tokenizer(["<pad>"]), "special"),
    ("load_tokenizer missing", lambda: load_tokenizer("/no/such/dir"), "does not exist"),
    ("load_causal_lm missing", lambda: load_causal_lm("/no/such/dir"), "config.json"),
    ("tiny_config arch", lambda: tiny_config("bert"), "arch"),
    ("attach_lora r", lambda: attach_lora(tiny_causal_lm("gpt2"), r=0), "r must"),
    ("SFTConfig objective", lambda: SFTConfig(objective="ppo"), "objective"),
    ("SFTConfig lr", lambda: SFTConfig(lr=0), "lr"),
    ("SFTConfig batch_size", lambda: SFTConfig(batch_size=0), "batch_size"),
    ("encode lengths", lambda: encode(TOK, ["a"], ["a", "b"]), "equal length"),
    ("encode empty", lambda: encode(TOK, [], []), "empty"),
    ("length_grouped_batches", lambda: length_grouped_batches([1, 2], 0, seed=0), "batch_size"),
    ("gaussian_kl sigma zero", lambda: gaussian_kl(np.zeros(2), np.zeros(2), 0.0, 1.0), "sigma_q"),
    ("lora_kl not a model", lambda: lora_kl(3.0, 0.1), "model_or_adapter"),
    ("GaussianPosterior sigma", lambda: GaussianPosterior(attach_lora(tiny_causal_lm("gpt2")), float("nan")), "sigma"),
    ("classifier_tv one class", lambda: classifier_tv(np.zeros((1, 1)), np.ones((10, 1))), "n_splits"),
    ("classifier_tv empty", lambda: classifier_tv(np.zeros((0, 1)), np.ones((10, 1))), "empty"),
    (
        "classifier_tv classifier",
        lambda: classifier_tv(np.zeros((10, 1)), np.ones((10, 1)), classifier="svm"),
        "classifier",
    ),
    (
        "classifier_tv permutations",
        lambda: classifier_tv(np.zeros((10, 1)), np.ones((10, 1)), n_permutations=-1),
        "n_permutations",
    ),
    ("classifier_tv n_threads", lambda: classifier_tv(np.zeros((10, 1)), np.ones((10, 1)), n_threads=0), "n_threads"),
    ("fit_irt 1-D", lambda: fit_irt(np.zeros(3)), "2-D"),
    ("fit_irt table columns", lambda: __import__("pandas").DataFrame({"a": [1]}).pipe(fit_irt), "columns"),
    ("fit_irt heldout", lambda: fit_irt(np.zeros((2, 2)), heldout_fraction=1.0), "heldout_fraction"),
    ("response_matrix empty", lambda: response_matrix({}), "at least one"),
    ("op_count missing field", lambda: op_count([{"prompt": "x"}]), "op"),
    ("base_pass_rate k", lambda: base_pass_rate(None, TOK, [], lambda p, o: True, k=0), "k must"),
]


@pytest.mark.parametrize("label,call,needle", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_errors(label, call, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        call()


CLI_CASES = [
    (
        ["bound", "--emp-risk", "0.5", "--kl", "1", "--n", "10", "--tv", "0.1", "--loss-min", "1", "--loss-max", "0"],
        "loss_range",
    ),
    (["kl", "--adapter", "/no/adapter", "--sigma", "0.1"], "does not exist"),
    (["kl", "--adapter", "/tmp", "--sigma", "abc"], "sigma"),
    (["adapter-demo", "--n", "abc"], "--n"),
    (["demo", "--config", "/no/config.yaml"], "does not exist"),
    (["pretrain", "--out", "/tmp/x", "--ops", "a,b"], "comma-separated integers"),
    (["finetune", "--base", "/no/base", "--train", "/no/file.jsonl", "--out", "/tmp/x"], "--train"),
    (
        ["finetune", "--base", "/no/base", "--train", "x.jsonl", "--out", "/tmp/x", "--objective", "ppo"],
        "invalid choice",
    ),
    (["evaluate", "--base", "/no/base"], "config.json"),
    (
        ["certify", "--base", "/no/base", "--adapter", "/no/a", "--train", "/no/t.jsonl", "--test", "/no/u.jsonl"],
        "--train",
    ),
    (["sweep", "--config", "/no/config.yaml", "--out", "/tmp/x"], "does not exist"),
    (["sweep", "--config", "quick", "--out", "/tmp/x", "--shard", "x"], "shard"),
    (["report", "/no/dir"], "not a sweep directory"),
    (["bound"], "required"),
]


@pytest.mark.parametrize("argv,needle", CLI_CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CLI_CASES)])
def test_cli_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_error_surface_size():
    from test_bad_inputs import CASES

    assert len(API_CASES) + len(CLI_CASES) + len(CASES) >= 40
    assert len(API_CASES) + len(CLI_CASES) >= 40


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/pacbayes_pwned", "w"))


def test_pickle_payload_refused(tmp_path):
    import os

    from pacbayes_sft.adapters import load_adapter_state

    if os.path.exists("/tmp/pacbayes_pwned"):
        os.remove("/tmp/pacbayes_pwned")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    torch.save({"x.lora_A.weight": torch.zeros(2, 2), "evil": _Boom()}, tmp_path / "adapter_model.bin")
    with pytest.raises(ValueError, match="could not be loaded safely"):
        load_adapter_state(tmp_path)
    assert not os.path.exists("/tmp/pacbayes_pwned")


def test_yaml_config_is_data_not_code(tmp_path, capsys):
    import os

    marker = tmp_path / "ran"
    (tmp_path / "evil.yaml").write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert main(["sweep", "--config", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not os.path.exists(marker)


def test_base_without_safetensors_refused(tmp_path):
    # A checkpoint that only has a pickle-based pytorch_model.bin is not loaded.
    model = tiny_causal_lm("gpt2")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        load_causal_lm(tmp_path)


def test_determinism_irt_and_tv():
    rng = np.random.default_rng(0)
    Y = (rng.random((50, 20)) < 0.5).astype(float)
    a, b = fit_irt(Y), fit_irt(Y)
    assert np.array_equal(a.difficulty, b.difficulty) and np.array_equal(a.ability, b.ability)
    p, q = rng.normal(size=(100, 2)), rng.normal(0.5, 1, size=(100, 2))
    assert (
        classifier_tv(p, q, n_permutations=50, n_threads=1).to_dict()
        == classifier_tv(p, q, n_permutations=50, n_threads=1).to_dict()
    )


def test_no_nan_escapes():
    from pacbayes_sft.bounds import seeger_bound, two_gap_bound

    for r in (0.0, 1e-300, 0.5, 1.0):
        for kl in (0.0, 1e-12, 1e6):
            for n in (1, 10**9):
                assert math.isfinite(seeger_bound(r, kl, n, 0.05))
                assert math.isfinite(two_gap_bound(r, kl, n, 0.0).total)
