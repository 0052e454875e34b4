"""certify() end to end on a tiny from-config model, through the API and the CLI."""

import json

import pytest

from pacbayes_sft.certify import certify
from pacbayes_sft.cli import main
from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.training.models import build_model, tiny_config
from pacbayes_sft.training.sft import SFTConfig, finetune


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cert")
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=32, layers=2, max_positions=256), seed=0)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    train = [p.to_dict() for p in generate(40, [3], split="train", seed=1)]
    test = [p.to_dict() for p in generate(40, [1, 5], split="test", seed=2)]
    finetune(
        str(root / "base"),
        tok,
        [e["prompt"] for e in train],
        [e["response"] for e in train],
        SFTConfig(max_steps=8, batch_size=8, progress=False),
        root / "adapter",
    )
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (root / name).write_text(
            "\n".join(
                json.dumps({"prompt": r["prompt"], "response": r["response"], "difficulty": r["op"]}) for r in rows
            )
        )
    return root, train, test


def test_certify_api(run):
    root, train, test = run
    tg, doc = certify(
        str(root / "base"), str(root / "adapter"), train, test, m=3, tv_permutations=50, sigmas=(1e-3, 1e-2)
    )
    assert doc["n"] == 40 and tg.n == 40
    # default scheme: every training example gets m = 3 draws of its own -> 120 independent losses
    assert doc["empirical_risk"]["mc_scheme"] == "per_example" and doc["empirical_risk"]["mc_losses"] == 120
    assert doc["empirical_risk"]["mc_upper"] >= doc["empirical_risk"]["mc_mean"]
    assert tg.total == pytest.approx(tg.emp_risk + tg.g_gen + tg.g_ext)
    assert doc["certified"] is False and not tg.certified
    assert abs(doc["delta"]["ledger"]["spent"] - 0.05) < 1e-12
    assert doc["g_gen"]["seeger"] <= doc["g_gen"]["maurer"] + 1e-12
    assert doc["tv"]["lower"] <= doc["tv"]["estimate"] + 1e-12
    json.dumps(doc)
    # Same inputs and seed: a bit-identical document.
    _, doc_again = certify(
        str(root / "base"), str(root / "adapter"), train, test, m=3, tv_permutations=50, sigmas=(1e-3, 1e-2)
    )
    assert json.dumps(doc, sort_keys=True) == json.dumps(doc_again, sort_keys=True)
    _tg2, doc2 = certify(
        str(root / "base"),
        str(root / "adapter"),
        train,
        test,
        m=3,
        tv_permutations=50,
        sigmas=(1e-3, 1e-2),
        sigma_rule="sharpness",
        space="lora",
        mc_scheme="shared",
    )
    assert doc2["kl"]["space"] == "lora" and "sharpness" in doc2["sigma"]["rule"]
    assert doc2["empirical_risk"]["mc_losses"] == 3
    from pacbayes_sft.bounds import mc_risk_upper

    for r in doc["grid"]:  # each grid row's bound rests on the 120 losses
        assert r["mc_risk_upper"] == pytest.approx(mc_risk_upper(r["mc_mean_risk"], 120, r["delta_mc"]))
    with pytest.raises(ValueError, match="mc_scheme"):
        certify(str(root / "base"), str(root / "adapter"), train, test, mc_scheme="both")
    with pytest.raises(ValueError, match="m must"):
        certify(str(root / "base"), str(root / "adapter"), train, test, m=0)


def test_certify_cli(run, capsys):
    root, _, _ = run
    out = root / "cert.json"
    argv = [
        "certify",
        "--base",
        str(root / "base"),
        "--adapter",
        str(root / "adapter"),
        "--train",
        str(root / "train.jsonl"),
        "--test",
        str(root / "test.jsonl"),
        "--out",
        str(out),
        "--m",
        "2",
        "--tv-permutations",
        "20",
        "--sigmas",
        "0.001,0.01",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "NOT certified" in text and "G_gen Seeger" in text
    assert json.loads(out.read_text())["n"] == 40


def test_certify_errors(run, tmp_path, capsys):
    root, train, test = run
    tok = igsm_tokenizer()
    other = build_model(tiny_config("llama", len(tok), hidden=48, layers=2, max_positions=256), seed=0)
    other.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="does not fit base"):
        certify(str(tmp_path / "other"), str(root / "adapter"), train, test, m=2)
    with pytest.raises(ValueError, match="adapter_config"):
        certify(str(root / "base"), str(tmp_path), train, test, m=2)
    with pytest.raises(ValueError, match="loss"):
        certify(str(root / "base"), str(root / "adapter"), train, test, loss="nll")
    with pytest.raises(ValueError, match="train_examples"):
        certify(str(root / "base"), str(root / "adapter"), [], test)
    capsys.readouterr()
    assert (
        main(
            [
                "certify",
                "--base",
                str(root / "base"),
                "--adapter",
                str(root / "adapter"),
                "--train",
                str(tmp_path / "missing.jsonl"),
                "--test",
                str(root / "test.jsonl"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "--train" in err and len(err.splitlines()) == 1
