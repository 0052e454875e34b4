"""Data: the iGSM-style generator, a word-level tokenizer, loaders for users' data, bucketing."""

from .igsm import IGSMConfig, Problem, generate, generate_problem, iter_problems, verify, vocabulary

__all__ = ["IGSMConfig", "Problem", "generate", "generate_problem", "iter_problems", "verify", "vocabulary"]
