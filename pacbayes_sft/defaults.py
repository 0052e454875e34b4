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

RACE_EPSILON = 0.02
"""ε of a race's ε-tie: buckets whose mean losses differ by at most this (loss units) count as tied."""

RACE_LEVEL = 0.95
"""Probability that a race's answer (the best bucket, or an ε-tie holding it) is right."""

RACE_ROUND_ITEMS = 200
"""Fresh test items per round of a race (a multiple of the 8 iGSM test ops keeps rounds stratified)."""

RACE_MAX_ITEMS = 4000
"""Cap on the distinct test items of a race, the sweep's own test set included."""

LABEL_FREE_N_BOOT = 1000
"""Bootstrap resamples of a label-free estimate's interval (ATC, DoC, disagreement; estimate-risk)."""

LABEL_FREE_DRAWS = 2
"""Posterior draws per prompt for the label-free disagreement estimators (a pair gives one disagreement)."""

LABEL_FREE_SOURCE = 200
"""Held-out labelled training-distribution examples per cell for the label-free estimators."""

LABEL_FREE_POOL = 50
"""Labelled pool problems per test slice that ``estimate-risk --run`` draws from the sweep's task
for the reweighted estimators (the target-risk study measured them with 50)."""

LABEL_FREE_REPORT_N_BOOT = 300
"""Bootstrap resamples of each label-free interval in a sweep's report, which estimates every cell
on every test mixture (fewer than :data:`LABEL_FREE_N_BOOT` to keep a report quick; the point
estimates do not depend on it)."""

BEST_BUCKET_N_BOOT = 2000
"""Bootstrap resamples of the test items behind p_best (each bucket's chance of being the best)
and the observed 95% sets of a report."""
