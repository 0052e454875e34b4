"""Data: the iGSM-style generator, a word-level tokenizer, loaders for users' data, bucketing."""

from .igsm import IGSMConfig, Problem, generate, generate_problem, iter_problems, test_set, test_slices, vocabulary
from .igsm_verify import Verdict, verify

__all__ = ["IGSMConfig", "Problem", "Verdict", "generate", "generate_problem", "iter_problems", "test_set", "test_slices", "verify", "vocabulary"]
