"""The TV term's cache: the same inputs read back the same term without refitting; any input that
changes (a text, the seed, δ, a setting) is a new entry; no cache, no files."""

import json

import pytest

import pacbayes_sft.certify.tv_term as tv_term
from pacbayes_sft.certify.config import TVConfig
from pacbayes_sft.certify.tv_term import classifier_tv_term, tv_cache


def _texts(k: int, word: str) -> list[str]:
    return [f"x{i % 7} {word} y{i % 5} z{(i * k) % 11}" for i in range(40)]


P, Q = _texts(3, "plus"), _texts(5, "times")
CFG = TVConfig(features="structure", permutations=20)


def test_cache_reads_back_the_term_without_refitting(tmp_path, monkeypatch):
    with tv_cache(tmp_path):
        first = classifier_tv_term(P, Q, CFG, 0.05, 3)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["estimate"] == first.estimate
    assert 0 < first.estimate <= 1

    def refit(*a, **k):
        raise AssertionError("the cached term must not be refitted")

    monkeypatch.setattr(tv_term, "classifier_tv", refit)
    with tv_cache(tmp_path):
        again = classifier_tv_term(list(P), list(Q), CFG, 0.05, 3)
    assert again == first  # every field, details included (a JSON round trip of the same numbers)
    for changed in (([*P[:-1], "new text"], Q, CFG, 0.05, 3), (P, Q, CFG, 0.05, 4), (P, Q, CFG, 0.01, 3),
                    (P, Q, TVConfig(features="structure", permutations=10), 0.05, 3)):  # fmt: skip
        with tv_cache(tmp_path), pytest.raises(AssertionError, match="refitted"):
            classifier_tv_term(*changed)


def test_no_cache_writes_nothing_and_an_unreadable_entry_is_recomputed(tmp_path):
    term = classifier_tv_term(P, Q, CFG, 0.05, 3)
    assert not list(tmp_path.iterdir())
    with tv_cache(tmp_path):
        classifier_tv_term(P, Q, CFG, 0.05, 3)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text("{not json")
    with tv_cache(tmp_path):
        assert classifier_tv_term(P, Q, CFG, 0.05, 3) == term
    assert json.loads(entry.read_text())["estimate"] == term.estimate
