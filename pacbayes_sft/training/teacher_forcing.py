"""Kept for compatibility: teacher forcing lives in :mod:`pacbayes_sft.lm.teacher_forcing`."""

from ..lm.teacher_forcing import TeacherForcedStats, smoothed_nll_max, teacher_forced_stats, token_logprobs

__all__ = ["TeacherForcedStats", "smoothed_nll_max", "teacher_forced_stats", "token_logprobs"]
