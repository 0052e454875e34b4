"""Fresh test items for the rounds of a race, disjoint from the committed test set: generated iGSM
problems, or for a dataset task the test file's rows beyond the committed test set (stratified by
bin, without replacement, until a bin is used up; the race then stops open at that point).

A race's guarantee needs every round's items to average, slice by slice, to the test mixture's
mean (uniform over ``test.ops``, held-out templates), as the committed test set does (n_per_op per
op). Two schemes:

- ``stratified`` (the default for a new race): round r holds ⌊k/K⌋ or ⌈k/K⌉ problems of each of the K
  test ops (the first k mod K ops one more), each op from its own stream ``(s_r · 1000 + op)`` with
  s_r = ``test.seed + SEED_OFFSET + r``. With k a multiple of K (the default 200 items, 8 ops) every
  round is in the mixture's exact proportions, like the test set.
- ``mixed`` (races started before the setting existed): one stream s_r, each problem's op drawn
  uniformly and redrawn while its template is a training one. Ops whose templates are more often
  held out come out slightly more often (on modulus 7, between 0.120 and 0.127 per op instead of
  0.125), so the round's mean is off the mixture's by at most 2·0.0056·max|θ_op| in a paired gap.

- ``sampled`` (a race on another mixture than the test set's, ``decide.mixtures``): round r's op
  counts are one multinomial draw of ``n_items`` over the mixture's op weights (generator seeded
  with s_r + MIXTURE_OFFSET), then each op's problems from its own stream ((s_r + MIXTURE_OFFSET) ·
  1000 + op). Every item is then an independent draw from the mixture, whatever its weights, so a
  round's mean is unbiased for the mixture's; the counts' own variance is the price.

Seeds: the committed test set's op k uses the stream ``test.seed + k`` (k < SEED_OFFSET), so no
stream, and no problem seed, is shared between the test set, the two schemes and the rounds.
"""

from __future__ import annotations

import numpy as np

from ..data.igsm import IGSMConfig, Problem, generate
from ..sweep.config import SweepConfig

SEED_OFFSET = 1_000_000
MIXTURE_OFFSET = 500_000  # a mixture race's streams are not the test-mixture race's (rounds < 500,000)
ITEM_SCHEMES = ("stratified", "mixed", "sampled")


def item_seed(cfg: SweepConfig, round_: int) -> int:
    """The stream seed s_r of fresh round ``round_`` ≥ 1."""
    if not (isinstance(round_, int) and round_ >= 1):
        raise ValueError(f"round_ must be an integer >= 1 (round 0 is the committed test set), got {round_!r}")
    return cfg.test.seed + SEED_OFFSET + round_


def op_counts(n_items: int, ops: list[int]) -> dict[int, int]:
    """Problems per op of a stratified round: n_items // K each, the first n_items % K ops one more."""
    q, r = divmod(n_items, len(ops))
    return {op: q + (i < r) for i, op in enumerate(ops)}


def sampled_counts(weights: dict[int, float], n_items: int, seed: int) -> dict[int, int]:
    """Problems per op of a ``sampled`` round: one multinomial draw over the normalised weights."""
    ops = sorted(weights)
    w = np.array([float(weights[o]) for o in ops])
    draw = np.random.default_rng(seed).multinomial(n_items, w / w.sum())
    return {op: int(c) for op, c in zip(ops, draw)}


def fresh_items(
    cfg: SweepConfig,
    round_: int,
    n_items: int,
    scheme: str = "stratified",
    weights: dict[int, float] | None = None,
    task=None,
) -> list[Problem]:
    """``n_items`` held-out-template problems of fresh round ``round_`` from the test mixture (or,
    for ``sampled``, from the mixture of op ``weights``), by ``scheme`` (see the module docstring);
    a stratified round lists its ops in ``test.ops`` order, a sampled one in increasing op order.
    A dataset task (``task``, its prepared :class:`~pacbayes_sft.sweep.tasks.DatasetTask`) gives the
    test file's rows beyond the committed test set, stratified by bin, until a bin runs out
    (:class:`~pacbayes_sft.sweep.dataset.PoolUsedUp`)."""
    if cfg.task.kind != "igsm":
        if scheme != "stratified" or weights is not None or task is None:
            raise ValueError(f"task kind {cfg.task.kind!r}: fresh rows come from its test file, stratified by bin only")
        item_seed(cfg, round_)  # the same check of the round
        return task.fresh_test_rows(round_, n_items)
    if scheme not in ITEM_SCHEMES:
        raise ValueError(f"scheme must be one of {ITEM_SCHEMES}, got {scheme!r}")
    if (scheme == "sampled") != (weights is not None):
        raise ValueError("weights: the 'sampled' scheme needs op weights, and only it takes them")
    cfg_igsm, seed, ops = IGSMConfig(modulus=cfg.task.modulus), item_seed(cfg, round_), list(cfg.test.ops)
    if scheme == "sampled":
        seed += MIXTURE_OFFSET
        counts = sampled_counts(weights, n_items, seed)
        gen = {op: generate(c, [op], split="test", seed=seed * 1000 + op, config=cfg_igsm) for op, c in counts.items() if c}
        return [p for op in sorted(gen) for p in gen[op]]
    if scheme == "mixed":
        return generate(n_items, ops, split="test", seed=seed, config=cfg_igsm)
    counts = op_counts(n_items, ops)
    return [p for op in ops for p in generate(counts[op], [op], split="test", seed=seed * 1000 + op, config=cfg_igsm)]
