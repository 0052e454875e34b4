"""Language-model primitives shared by every layer: encoding (prompt, response) pairs into
token batches, teacher-forced bounded losses, and batched generation."""

from .encoding import Encoded, collate, collate_prompts_left, encode, length_grouped_batches
from .scoring import generate_texts, greedy_generate, teacher_forced_metrics, teacher_forced_role_errors
from .teacher_forcing import TeacherForcedStats, smoothed_nll_max, teacher_forced_stats, token_logprobs

__all__ = [
    "Encoded",
    "TeacherForcedStats",
    "collate",
    "collate_prompts_left",
    "encode",
    "generate_texts",
    "greedy_generate",
    "length_grouped_batches",
    "smoothed_nll_max",
    "teacher_forced_metrics",
    "teacher_forced_role_errors",
    "teacher_forced_stats",
    "token_logprobs",
]
