"""Difficulty measures on the synthetic task."""

import numpy as np
import pytest

from pacbayes_sft.data import generate, verify
from pacbayes_sft.data.tokenizer import igsm_tokenizer
from pacbayes_sft.estimators.difficulty import base_nll, base_pass_rate, cot_length, irt_difficulty_report, op_count
from pacbayes_sft.estimators.irt import fit_irt
from pacbayes_sft.training.models import build_model, tiny_config

TOK = igsm_tokenizer()


def test_op_count_and_cot_length():
    probs = generate(30, [1, 3, 6], seed=3)
    ops = op_count(probs)
    assert ops.tolist() == [p.op for p in probs]
    words = cot_length(probs)
    toks = cot_length(probs, TOK)
    assert np.array_equal(words, toks)  # word-level tokenizer: one token per word
    # CoT length grows with op: one 15-token step per operation + "answer v".
    from pacbayes_sft.data.igsm import STEP_ROLES

    assert len(STEP_ROLES) == 15
    assert np.array_equal(toks, 15 * ops + 2)
    assert op_count([{"difficulty": 2.5}]).tolist() == [2.5]


def test_base_measures_on_tiny_model():
    model = build_model(tiny_config("llama", len(TOK), hidden=32, layers=1, max_positions=512), seed=0)
    probs = generate(6, [1, 4], seed=1)
    nll = base_nll(model, TOK, probs)
    assert nll.shape == (6,) and np.isfinite(nll).all() and (nll > 0).all()
    rate = base_pass_rate(model, TOK, probs, lambda e, o: verify(e.prompt, o).answer_correct, k=2, max_new_tokens=8)
    assert rate.shape == (6,) and ((rate >= 0) & (rate <= 1)).all()
    always = base_pass_rate(model, TOK, probs, lambda p, o: True, k=2, max_new_tokens=4)
    assert (always == 1.0).all()
    with pytest.raises(ValueError, match="temperature"):
        base_pass_rate(model, TOK, probs, lambda p, o: True, temperature=0)


def test_irt_difficulty_report():
    rng = np.random.default_rng(0)
    b = np.linspace(-2, 2, 20)
    th = rng.standard_normal(300)
    Y = (rng.random((300, 20)) < 1 / (1 + np.exp(-(th[:, None] - b[None, :])))).astype(float)
    rep = irt_difficulty_report(fit_irt(Y, "1pl"), {"op": np.arange(20), "reversed": -np.arange(20)})
    assert rep["op"] > 0.9 and rep["reversed"] < -0.9
    with pytest.raises(ValueError, match="items"):
        irt_difficulty_report(fit_irt(Y, "1pl"), {"op": [1, 2]})
