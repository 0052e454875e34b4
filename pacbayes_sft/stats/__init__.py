"""Sequential statistics: time-uniform confidence sequences for bounded means, and racing K
buckets on paired per-item losses to the best one (or an ε-tie) at a stated level.

Pure numpy and scipy, like :mod:`pacbayes_sft.bounds`: this package imports no torch and no model
code. :mod:`~pacbayes_sft.stats.mixture` holds the conjugate-mixture empirical-Bernstein sequence
(the races' default), :mod:`~pacbayes_sft.stats.confidence` the older intervals (the betting
confidence sequence and the empirical-Bernstein one with a union over looks),
:mod:`~pacbayes_sft.stats.allocation` the race that spends items on the buckets still in contention.
"""

from .allocation import CONFIDENCES, STOP_REASONS, PairedRace, RaceResult, RoundDecision, run_race
from .confidence import BettingState, betting_bounds, paired_interval
from .mixture import MixtureState, mixture_boundary, mixture_bounds

__all__ = [
    "CONFIDENCES",
    "STOP_REASONS",
    "BettingState",
    "MixtureState",
    "PairedRace",
    "RaceResult",
    "RoundDecision",
    "betting_bounds",
    "mixture_boundary",
    "mixture_bounds",
    "paired_interval",
    "run_race",
]
