"""The TV term G_ext = (b − a)·TV̂ of a certificate: the classifier TV proxy between the
training sample and the test set, each side capped by a stratified random sample.

G_ext uses the classifier's ``estimate`` = max(0, held-out 2·BA − 1), which a TV term needs in
[0, 1]. Clipping makes it biased *up* near TV = 0 (about +0.02 at TV = 0 with 320 texts per
side), so it is not a lower bound in expectation; the unclipped held-out value, which is, stays
in the term as ``raw_estimate``. Neither is an upper bound on TV, so a total built on them is an
estimate, and the :class:`~pacbayes_sft.certify.certificate.TVTerm` says so.

The term depends on the two samples, the TV settings, δ and the seed only, not on the model: in a
sweep every base and objective of one (bucket, n, seed) has the same one. Inside
``with tv_cache(folder):`` each term is kept in ``folder/<key>.json`` (the key a hash of all its
inputs) and read back instead of refitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from ..data.loaders import example_field
from ..estimators.classifier_tv import classifier_tv
from .certificate import TVTerm
from .config import TVConfig

STRATA_FIELDS = ("op", "difficulty", "slice")
ONE_THREAD_BELOW = 10_000
"""Samples (both sides) below which the proxy is fitted on one thread: on small samples the
gradient-boosting candidate's OpenMP threads cost more than they save (10 fits on 832 samples
took 0.26 s on one thread and 0.90 s on two, on 2 CPU cores)."""
_CACHE: ContextVar[Path | None] = ContextVar("tv_cache", default=None)


@contextmanager
def tv_cache(folder: str | Path | None) -> Iterator[None]:
    """Inside the block, every classifier TV term is read from ``folder`` when it holds one with the
    same inputs, else computed and written there (None: no cache)."""
    token = _CACHE.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _CACHE.reset(token)


def _cache_key(texts: tuple, strata: tuple, cfg: TVConfig, delta: float, seed: int) -> str:
    """A hash of every input of the term, and of the code that fits it (toolkit and scikit-learn
    versions), so an entry fitted by other code is not reused."""
    import sklearn

    from .. import __version__

    parts = [list(texts[0]), list(texts[1]), [None if s is None else [str(k) for k in s] for s in strata]]
    blob = json.dumps([parts, dataclasses.asdict(cfg), repr(float(delta)), int(seed), __version__, sklearn.__version__])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cached(key_inputs: tuple, compute) -> TVTerm:
    folder = _CACHE.get()
    if folder is None:
        return compute()
    path = folder / f"{_cache_key(*key_inputs)}.json"
    try:
        return TVTerm.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: compute it again
        pass
    term = compute()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(term.to_dict() | {"certified": term.certified}))
    os.replace(tmp, path)  # atomic: a concurrent shard reads the whole term or none
    return term


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
    Each side is capped at ``cfg.max_per_side`` by a stratified random sample (:func:`capped`).
    Read from the :func:`tv_cache` folder when one is set and holds it."""
    p = capped(train_texts, strata[0], cfg.max_per_side, seed)
    q = capped(test_texts, strata[1], cfg.max_per_side, seed + 1)

    def compute() -> TVTerm:
        res = classifier_tv(
            p,
            q,
            features=cfg.features,
            delta=delta,
            n_permutations=cfg.permutations,
            random_state=seed,
            n_splits=max(2, min(5, len(p), len(q))),
            n_threads=1 if len(p) + len(q) < ONE_THREAD_BELOW else None,
        )
        return TVTerm.from_result(res)

    return _cached(((tuple(train_texts), tuple(test_texts)), strata, cfg, delta, seed), compute)


def examples_tv_term(
    train_examples: Sequence[Any], test_examples: Sequence[Any], cfg: TVConfig, delta: float, seed: int
) -> TVTerm:
    """:func:`classifier_tv_term` between two example lists, on each example's text
    ``prompt + " " + response``; every side is stratified by its examples' slice (the first of
    ``STRATA_FIELDS`` they all have)."""
    texts = [[example_field(e, "prompt") + " " + example_field(e, "response") for e in ex] for ex in (train_examples, test_examples)]
    strata = (_strata(train_examples), _strata(test_examples))
    return classifier_tv_term(texts[0], texts[1], cfg, delta, seed, strata=strata)
