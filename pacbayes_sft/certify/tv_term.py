"""The TV term G_ext = (b − a)·TV̂ of a certificate: the classifier TV proxy between the
training sample and the test set, each side capped by a stratified random sample.

G_ext uses the classifier's ``estimate`` = max(0, held-out 2·BA − 1), which a TV term needs in
[0, 1]. Clipping makes it biased *up* near TV = 0 (about +0.02 at TV = 0 with 320 texts per
side), so it is not a lower bound in expectation; the unclipped held-out value, which is, stays
in the term as ``raw_estimate``. Neither is an upper bound on TV, so a total built on them is an
estimate, and the :class:`~pacbayes_sft.certify.certificate.TVTerm` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.loaders import example_field
from ..estimators.classifier_tv import classifier_tv
from .certificate import TVTerm
from .config import TVConfig

STRATA_FIELDS = ("op", "difficulty", "slice")


def capped(texts: Sequence[str], strata: Sequence[Any] | None, cap: int | None, seed: int) -> list[str]:
    """At most ``cap`` texts: a random sample, stratified by ``strata`` (e.g. the op count of each
    example) so that every slice keeps its share. Never the first ``cap`` of a sorted list."""
    texts = list(texts)
    if cap is None or len(texts) <= cap:
        return texts
    rng = np.random.default_rng(seed)
    keys = np.asarray([str(k) for k in strata]) if strata is not None else np.zeros(len(texts), dtype=str)
    chosen: list[int] = []
    groups = [np.flatnonzero(keys == k) for k in np.unique(keys)]
    quotas = _largest_remainder([len(g) * cap / len(texts) for g in groups], cap)
    for g, quota in zip(groups, quotas):
        chosen += rng.choice(g, size=quota, replace=False).tolist()
    return [texts[i] for i in sorted(chosen)]


def _largest_remainder(shares: list[float], total: int) -> list[int]:
    """Integers that sum to ``total``, each the floor of its share plus one for the largest remainders."""
    base = [int(np.floor(x)) for x in shares]
    order = np.argsort([-(x - b) for x, b in zip(shares, base)], kind="stable")
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def _strata(examples: Sequence[Any]) -> list[Any] | None:
    """Each example's slice: the first of ``STRATA_FIELDS`` that every example has, else None."""
    for key in STRATA_FIELDS:
        try:
            return [example_field(e, key) for e in examples]
        except (KeyError, AttributeError, ValueError):
            continue
    return None


def classifier_tv_term(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    cfg: TVConfig,
    delta: float,
    seed: int,
    *,
    strata: tuple[Sequence[Any] | None, Sequence[Any] | None] = (None, None),
) -> TVTerm:
    """The classifier TV proxy between training and test texts, as a (not certified) TV term.
    Each side is capped at ``cfg.max_per_side`` by a stratified random sample (:func:`capped`)."""
    p = capped(train_texts, strata[0], cfg.max_per_side, seed)
    q = capped(test_texts, strata[1], cfg.max_per_side, seed + 1)
    res = classifier_tv(
        p,
        q,
        features=cfg.features,
        delta=delta,
        n_permutations=cfg.permutations,
        random_state=seed,
        n_splits=max(2, min(5, len(p), len(q))),
    )
    return TVTerm.from_result(res)


def examples_tv_term(
    train_examples: Sequence[Any], test_examples: Sequence[Any], cfg: TVConfig, delta: float, seed: int
) -> TVTerm:
    """:func:`classifier_tv_term` between two example lists, on each example's text
    ``prompt + " " + response``; every side is stratified by its examples' slice (the first of
    ``STRATA_FIELDS`` they all have)."""
    texts = [[example_field(e, "prompt") + " " + example_field(e, "response") for e in ex] for ex in (train_examples, test_examples)]
    strata = (_strata(train_examples), _strata(test_examples))
    return classifier_tv_term(texts[0], texts[1], cfg, delta, seed, strata=strata)
