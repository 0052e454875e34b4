"""Every default that more than one place reads, defined once.

The configs (:class:`~pacbayes_sft.certify.BoundConfig`, :class:`~pacbayes_sft.certify.TVConfig`,
:class:`~pacbayes_sft.certify.EvalConfig`), the command line and the Python API all take their
defaults from here, so ``pacbayes-sft certify``, ``certify()`` and a sweep cell use the same
settings unless told otherwise. This module imports nothing: every layer may read it.
"""

DELTA = 0.05
"""Total failure probability of a certificate (split in a ledger)."""

LOSS = "answer_error"
"""The bounded loss in [0, 1]: 1 − [the greedy answer is judged correct]."""

SCORER = "final_answer"
"""How a generated answer is compared with an example's reference answer."""

MAX_NEW_TOKENS = 256
"""Longest generated answer, in tokens."""

BATCH_SIZE = 64
"""Examples per forward pass (teacher forcing and generation)."""

TV_PERMUTATIONS = 200
"""Label permutations for the classifier TV proxy's p-value."""

TV_MAX_PER_SIDE = 2000
"""At most this many texts per side of the TV proxy (a stratified random sample)."""

CATONI_C = 1.0
"""C of Catoni's bound in the σ-grid table (reported beside Seeger's; never used to choose σ)."""
