"""Exact faster greedy decoding: finished rows leave the batch, and a draw is verified against a
reference generation. Every output is checked against plain generation, one row at a time."""

from collections import Counter

import pytest
import torch
from greedy_reference import plain_greedy

from pacbayes_sft.lm.decoding import greedy_continue, greedy_verified
from pacbayes_sft.lm.rows import has_row_listeners
from pacbayes_sft.posteriors import GaussianPosterior
from pacbayes_sft.training.models import attach_lora, tiny_causal_lm

PAD = 0
PROMPTS = [[1, 5, 9], [1, 7], [1, 3, 4, 12, 30, 6], [1, 22, 40, 2], [1, 8, 8, 8, 8]]
CAP = 24


def _model(arch, lora=True):
    m = tiny_causal_lm(arch, seed=3)
    if lora:
        m = attach_lora(m, r=4, alpha=8.0, seed=4)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
    return m.eval()


def _frequent_eos(model):
    """The token greedy decoding emits most often, so rows end at different steps."""
    outs = [plain_greedy(model, p, CAP, eos=10_000) for p in PROMPTS]
    counts = Counter(t for o in outs for t in o[1:])
    return counts.most_common(1)[0][0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_dropping_finished_rows_equals_plain_generation(arch):
    model = _model(arch)
    eos = _frequent_eos(model)
    limits = [CAP, 5, CAP, 1, 13]
    got = greedy_continue(model, PROMPTS, limits, eos_token_id=eos, pad_token_id=PAD)
    want = [plain_greedy(model, p, m, eos) for p, m in zip(PROMPTS, limits)]
    assert got == want
    assert len({len(g) for g in got}) > 2  # rows really ended at different steps


@pytest.mark.parametrize("space", ["delta", "lora"])
def test_per_row_draws_follow_a_narrowing_batch(space):
    """Row r under sample_rows decodes exactly what draw ks[r] alone decodes, while rows leave."""
    model = _model("llama")
    eos = _frequent_eos(model)
    post = GaussianPosterior(model, 0.3, space, seed=2)
    ks = [4, 0, 9, 2, 7]
    with post.sample_rows(ks) as mdl:
        got = greedy_continue(mdl, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
        assert has_row_listeners(mdl)
    assert not has_row_listeners(model)
    want = []
    for p, k in zip(PROMPTS, ks):
        with post.sample(k) as mdl:
            want.append(plain_greedy(mdl, p, CAP, eos))
    assert got == want
    assert len({len(g) for g in got}) > 1


@pytest.mark.parametrize("space", ["delta", "lora"])
@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.5])
def test_verified_decoding_equals_plain_decoding(space, sigma):
    """Against the mean's own output: identical at σ = 0 with no row decoded, and equal to plain
    decoding of every draw whatever σ (near draws mostly verified, far draws decoded on)."""
    model = _model("llama")
    eos = _frequent_eos(model)
    reference = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    post = GaussianPosterior(model, sigma, space, seed=8)
    ks = [3, 1, 4, 1, 5]
    with post.sample_rows(ks) as mdl:
        got, decoded = greedy_verified(mdl, PROMPTS, reference, CAP, eos_token_id=eos, pad_token_id=PAD)
    with post.sample_rows(ks) as mdl:
        plain = greedy_continue(mdl, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    assert got == plain
    if sigma == 0.0:
        assert got == reference and decoded == 0


def test_verification_with_a_wrong_reference_still_decodes_greedily():
    """References of other lengths, capped ones and garbage: the output is the model's own."""
    model = _model("gpt2")
    eos = _frequent_eos(model)
    own = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    refs = [[eos], [7] * CAP, [*own[2][:3], eos], own[3], [5, 6, eos]]
    got, decoded = greedy_verified(model, PROMPTS, refs, CAP, eos_token_id=eos, pad_token_id=PAD)
    assert got == own
    assert decoded >= 1


def test_decoding_bad_inputs():
    model = _model("llama", lora=False)
    with pytest.raises(ValueError, match="limits"):
        greedy_continue(model, PROMPTS, [3], eos_token_id=2, pad_token_id=PAD)
    with pytest.raises(ValueError, match="limit"):
        greedy_continue(model, PROMPTS[:1], [0], eos_token_id=2, pad_token_id=PAD)
    with pytest.raises(ValueError, match="reference"):
        greedy_verified(model, PROMPTS[:1], [[5, 6]], 8, eos_token_id=2, pad_token_id=PAD)  # neither ended nor capped
    with pytest.raises(ValueError, match="reference"):
        greedy_verified(model, PROMPTS[:1], [[5, 2, 6, 2]], 8, eos_token_id=2, pad_token_id=PAD)  # <eos> inside


@pytest.mark.parametrize("space", ["delta", "lora"])
def test_answer_error_under_draws_is_the_same_with_and_without_the_reference(space):
    """The answer_error losses of per-row draws, loss by loss, whether or not the mean's answers
    were kept (shipped iGSM base with an adapter, draws near and far from the mean)."""
    from pacbayes_sft.certify.losses import answer_losses
    from pacbayes_sft.data import generate
    from pacbayes_sft.data.igsm_verify import igsm_judge
    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.estimators.mc_risk import mc_stochastic_risk_per_example
    from pacbayes_sft.sweep.config import SHIPPED_BASE
    from pacbayes_sft.training.models import load_causal_lm

    tok = load_tokenizer(SHIPPED_BASE)
    model = attach_lora(load_causal_lm(SHIPPED_BASE), r=4, alpha=8.0, seed=1).eval()
    examples = generate(8, [2, 5], split="train", seed=3)  # 16 rows: batches of 5 end mid-draw
    for sigma in (0.002, 0.05):
        post = GaussianPosterior(model, sigma, space, seed=6)
        runs = []
        for keep_reference in (False, True):
            losses = answer_losses(tok, examples, igsm_judge(7), max_new_tokens=60, batch_size=5)
            if keep_reference:
                losses.point(model)
            mc = mc_stochastic_risk_per_example(
                post, None, losses.n, 2, 0.05, batch_loss_fn=losses.batch, batch_size=losses.batch_size
            )
            runs.append((mc.per_sample, losses.stats["rows_decoded"]))
        assert runs[0][0] == runs[1][0]
        assert runs[1][1] <= runs[0][1] == 16


def test_verification_in_small_chunks_continues_each_row_from_its_own_cache(monkeypatch):
    """A logit budget of about one row per pass: every chunk keeps its cache and decodes its
    departed rows on from it; the outputs are plain greedy decoding, row by row."""
    import pacbayes_sft.lm.decoding as decoding

    model = _model("qwen2")
    eos = _frequent_eos(model)
    own = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    refs = [own[0], [*own[1][:2], 3 if own[1][2:3] != [3] else 4, eos], [7] * CAP, own[3], [eos]]
    vocab = int(model.get_output_embeddings().weight.shape[0])
    monkeypatch.setattr(decoding, "LOGIT_BUDGET", (CAP + 1) * vocab * 2)
    got, decoded = greedy_verified(model, PROMPTS, refs, CAP, eos_token_id=eos, pad_token_id=PAD)
    assert got == [plain_greedy(model, p, CAP, eos) for p in PROMPTS]
    assert 1 <= decoded <= 3


def _igsm_setup(n: int = 10):
    from pacbayes_sft.data import generate
    from pacbayes_sft.data.igsm_verify import igsm_judge
    from pacbayes_sft.data.tokenizer import load_tokenizer
    from pacbayes_sft.sweep.config import SHIPPED_BASE
    from pacbayes_sft.training.models import load_causal_lm

    tok = load_tokenizer(SHIPPED_BASE)
    model = attach_lora(load_causal_lm(SHIPPED_BASE), r=4, alpha=8.0, seed=1).eval()
    return tok, model, generate(n, [1, 2, 4, 6], split="train", seed=5), igsm_judge(7)


def test_the_means_answers_checked_against_the_responses_are_its_greedy_answers():
    """gold=True: rows whose response is the model's own answer pass the check in one pass, the
    others (the generator's solution, a truncated one) are decoded on; every answer and loss is
    plain greedy decoding's."""
    import dataclasses

    from pacbayes_sft.certify.losses import answer_losses, gold_references
    from pacbayes_sft.lm.scoring import generate_token_ids

    tok, model, examples, judge = _igsm_setup()
    cap = 40
    plain = generate_token_ids(model, tok, [e.prompt for e in examples], max_new_tokens=cap, batch_size=4)
    own = [tok.decode(t, skip_special_tokens=True) for t in plain]
    # half the examples carry the model's own answer as their response, half the generator's
    mixed = [dataclasses.replace(e, response=own[i]) if i % 2 and own[i].strip() else e for i, e in enumerate(examples)]
    runs = {}
    for gold in (False, True):
        losses = answer_losses(tok, mixed, judge, max_new_tokens=cap, batch_size=3, gold=gold)
        runs[gold] = (losses.point(model), [losses.outputs[i] for i in range(losses.n)], losses.stats)
    assert runs[True][:2] == runs[False][:2]
    assert runs[True][1] == plain
    assert runs[False][2]["point_rows_decoded"] == len(mixed)
    assert runs[True][2]["point_rows_decoded"] < len(mixed)
    refs = gold_references(tok, mixed, cap)
    assert all(len(r) <= cap for r in refs) and any(len(r) == cap and r[-1] != tok.eos_token_id for r in refs)


def test_gold_references_need_a_response_on_every_example():
    from pacbayes_sft.certify.losses import gold_references

    tok, _, examples, _ = _igsm_setup(3)
    no_response = [{"prompt": e.prompt, "answer": e.answer} for e in examples]
    assert gold_references(tok, no_response, 20) is None
    assert gold_references(tok, [{"prompt": "a", "response": " "}], 20) is None
    refs = gold_references(tok, examples, 500)
    assert all(r[-1] == tok.eos_token_id and tok.eos_token_id not in r[:-1] for r in refs)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_departed_rows_of_several_passes_decoded_together_under_their_own_draws(arch):
    """Passes of 2 rows (batch_size=2) whose departed rows are stacked from caches of different
    widths: each row still decodes exactly what its own draw decodes alone."""
    model = _model(arch)
    eos = _frequent_eos(model)
    reference = greedy_continue(model, PROMPTS, [CAP] * 5, eos_token_id=eos, pad_token_id=PAD)
    post = GaussianPosterior(model, 0.4, "lora", seed=11)
    ks = [2, 7, 1, 8, 2]
    with post.sample_rows(ks) as mdl:
        got, decoded = greedy_verified(
            mdl, PROMPTS, reference, CAP, eos_token_id=eos, pad_token_id=PAD, batch_size=2
        )
    want = []
    for p, k in zip(PROMPTS, ks):
        with post.sample(k) as mdl:
            want.append(plain_greedy(mdl, p, CAP, eos))
    assert got == want
    assert decoded >= 2
    with pytest.raises(ValueError, match="batch_size"):
        greedy_verified(model, PROMPTS, reference, CAP, eos_token_id=eos, pad_token_id=PAD, batch_size=0)


def test_answers_proved_by_teacher_forcing_are_the_greedy_answers():
    """Rows whose teacher-forced pass matches the reference exactly are taken as proved and not
    decoded; every answer and the risk are plain greedy decoding's (shipped base, ops it has
    mostly learned and ops it has not)."""
    from pacbayes_sft.certify.losses import answer_losses, proved_by_teacher_forcing
    from pacbayes_sft.lm.scoring import teacher_forced_metrics

    tok, model, examples, judge = _igsm_setup(16)
    cap = 120
    tf = teacher_forced_metrics(model, tok, [e.prompt for e in examples], [e.response for e in examples])
    proved = proved_by_teacher_forcing(tok, examples, tf["exact_match"], cap)
    assert 0 < len(proved) < len(examples)
    runs = []
    for given in ({}, proved):
        losses = answer_losses(tok, examples, judge, max_new_tokens=cap, batch_size=5)
        runs.append((losses.point(model, given), [losses.outputs[i] for i in range(losses.n)], losses.stats))
    assert runs[0][:2] == runs[1][:2]
    assert runs[1][2]["point_rows_decoded"] == len(examples) - len(proved)


def test_proved_answers_bad_inputs():
    from pacbayes_sft.certify.losses import answer_losses, proved_by_teacher_forcing, teacher_forced_losses

    tok, model, examples, judge = _igsm_setup(3)
    with pytest.raises(ValueError, match="exact_match"):
        proved_by_teacher_forcing(tok, examples, [1.0], 50)
    losses = answer_losses(tok, examples, judge, max_new_tokens=20)
    with pytest.raises(ValueError, match="proved"):
        losses.point(model, {7: [2]})
    tf = teacher_forced_losses(tok, [e.prompt for e in examples], [e.response for e in examples], "token_error")
    with pytest.raises(ValueError, match="proved"):
        tf.point(model, {0: [2]})


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_verified_decoding_on_sliding_window_attention(arch):
    """A window of 3 columns and references that depart at their second token with a long
    unverified rest: the departed rows decode on from a cache without holes (a sliding-window
    mask counts columns), so they write what plain decoding writes."""
    import random

    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cfg_cls, model_cls, extra = {
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"use_sliding_window": True, "max_window_layers": 0}),
        "mistral": (MistralConfig, MistralForCausalLM, {}),
    }[arch]
    torch.manual_seed(0)
    cfg = cfg_cls(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=3, pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra,
    )  # fmt: skip
    model = model_cls(cfg).eval().double()
    rng = random.Random(0)
    eos, cap = 63, 12
    prompts = [[1] + [rng.randrange(3, 60) for _ in range(rng.randint(2, 8))] for _ in range(6)]
    want = [plain_greedy(model, p, cap, eos) for p in prompts]
    refs = [[w[0], (w[1] + 1) % 60 + 3 if len(w) > 1 else 5, *[7] * (cap - 2)] for w in want]
    got, decoded = greedy_verified(model, prompts, refs, cap, eos_token_id=eos, pad_token_id=PAD, batch_size=4)
    assert got == want
    assert decoded >= 3


def test_a_response_holding_the_eos_token_is_cut_there():
    """A response whose text contains <eos>: its gold reference ends at that first <eos> (where
    greedy decoding would stop), and the checked answers equal plain decoding's."""
    import dataclasses

    from pacbayes_sft.certify.losses import answer_losses, gold_references

    tok, model, examples, judge = _igsm_setup(4)
    odd = [dataclasses.replace(e, response=e.response + " " + tok.eos_token + " x") if i == 0 else e for i, e in enumerate(examples)]
    refs = gold_references(tok, odd, 200)
    assert all(r.count(tok.eos_token_id) == 1 and r[-1] == tok.eos_token_id for r in refs)
    answers = []
    for gold in (False, True):
        losses = answer_losses(tok, odd, judge, max_new_tokens=200, gold=gold)
        answers.append((losses.point(model), [losses.outputs[i] for i in range(losses.n)]))
    assert answers[0] == answers[1]


def test_proved_answers_must_be_complete_greedy_answers():
    from pacbayes_sft.certify.losses import answer_losses

    tok, model, examples, judge = _igsm_setup(3)
    losses = answer_losses(tok, examples, judge, max_new_tokens=20)
    eos = tok.eos_token_id
    for bad in ([5, 6], [5, eos, 6, eos], [5] * 21, []):
        with pytest.raises(ValueError, match="complete greedy answer"):
            losses.point(model, {0: bad})
    with pytest.raises(ValueError, match="prompt"):
        greedy_verified(model, [[], [1, 5]], [[eos], [eos]], 4, eos_token_id=eos, pad_token_id=PAD)


def test_the_pre_analysed_vectorizer_reads_plain_texts_too():
    from pacbayes_sft.estimators.features import analyzed_texts, tfidf_vectorizer

    texts = ["a B c", "c d e a", "a b", "E d"]
    plain = tfidf_vectorizer().fit_transform(texts).toarray()
    assert (tfidf_vectorizer(pre_analyzed=True).fit_transform(list(analyzed_texts(texts))).toarray() == plain).all()
    assert (tfidf_vectorizer(pre_analyzed=True).fit_transform(texts).toarray() == plain).all()


def test_one_greedy_entry_point_writes_the_same_texts_with_and_without_references():
    """greedy and generate_and_judge on a tiny llama built from config, with a word tokenizer:
    references that are the model's own answers, wrong ones, a bare <eos> and none give the
    tokens, texts and verdicts of plain decoding row by row, in batches as given or by length,
    and under per-row draws each row decodes what its own draw decodes alone."""
    from pacbayes_sft.data.tokenizer import build_word_tokenizer
    from pacbayes_sft.lm.decoding import greedy
    from pacbayes_sft.lm.generation import generate_and_judge
    from pacbayes_sft.lm.scoring import prompt_token_ids

    tok = build_word_tokenizer([f"w{i}" for i in range(60)])  # 64 ids, as the tiny model's vocabulary
    model = _model("llama")
    tok.eos_token = tok.convert_ids_to_tokens(_frequent_eos(model))  # so rows end at different steps
    eos = tok.eos_token_id
    prompts = [" ".join(f"w{(7 * i + 11 * j) % 60}" for j in range(2 + i % 4)) for i in range(6)]
    ids = prompt_token_ids(tok, prompts)
    own = [plain_greedy(model, p, CAP, eos) for p in ids]
    assert len({len(o) for o in own}) > 2
    texts = [tok.decode(o, skip_special_tokens=True) for o in own]
    # even items carry the model's own text as their answer, odd ones another: the verdicts alternate
    items = [{"prompt": p, "answer": t if i % 2 == 0 else "none"} for i, (p, t) in enumerate(zip(prompts, texts))]
    judge = lambda item, text: text == item["answer"]  # noqa: E731
    wrong = [(own[1][0] + 1) % 60 + 4, eos]
    refs = [own[0], wrong, None, [eos], own[4], None]
    plain = generate_and_judge(model, tok, items, judge, max_new_tokens=CAP)
    for batch_size, by_length in ((None, False), (2, True)):
        checked = generate_and_judge(
            model, tok, items, judge, references=refs, max_new_tokens=CAP, batch_size=batch_size, by_length=by_length
        )
        assert checked.tokens == plain.tokens == own
        assert checked.texts == plain.texts == texts
        assert checked.correct == plain.correct == [i % 2 == 0 for i in range(6)]
        assert checked.decoded <= 4 < plain.decoded == 6  # rows 0 and 4 are proved by their references
    post = GaussianPosterior(model, 0.3, "lora", seed=5)
    ks = [4, 0, 9, 2, 7, 1]
    with post.sample_rows(ks) as mdl:
        got = greedy(mdl, ids, reference=refs, max_new_tokens=CAP, batch_size=2, by_length=True, eos_token_id=eos,
                     pad_token_id=PAD)  # fmt: skip
    want = []
    for p, k in zip(ids, ks):
        with post.sample(k) as mdl:
            want.append(plain_greedy(mdl, p, CAP, eos))
    assert got.tokens == want


def test_greedy_bad_inputs():
    from pacbayes_sft.lm.decoding import greedy

    model = _model("llama", lora=False)
    kw = {"eos_token_id": 2, "pad_token_id": PAD}
    with pytest.raises(ValueError, match="reference"):
        greedy(model, PROMPTS, reference=[[2]], max_new_tokens=4, **kw)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy(model, PROMPTS, max_new_tokens=0, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        greedy(model, PROMPTS, max_new_tokens=4, batch_size=0, **kw)
    with pytest.raises(ValueError, match="prompt"):
        greedy(model, [[], [1, 5]], max_new_tokens=4, **kw)
    with pytest.raises(ValueError, match="rows"):
        greedy_verified(model, PROMPTS[:2], [[2], [2]], 4, rows=[0], **kw)
    assert greedy(model, [], max_new_tokens=4, **kw) == ([], 0)
