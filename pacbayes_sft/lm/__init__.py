"""Language-model primitives shared by every layer: encoding (prompt, response) pairs into
token batches, teacher-forced bounded losses, and batched generation."""

from .decoding import greedy_continue, greedy_verified
from .encoding import Encoded, collate, collate_prompts_left, encode, length_grouped_batches
from .rows import row_listener, select_rows
from .scoring import (
    generate_texts,
    generate_token_ids,
    greedy_generate,
    prompt_token_ids,
    teacher_forced_metrics,
    teacher_forced_role_errors,
)
from .teacher_forcing import TeacherForcedStats, smoothed_nll_max, teacher_forced_stats, token_logprobs

__all__ = [
    "Encoded",
    "TeacherForcedStats",
    "collate",
    "collate_prompts_left",
    "encode",
    "generate_texts",
    "generate_token_ids",
    "greedy_continue",
    "greedy_generate",
    "greedy_verified",
    "length_grouped_batches",
    "prompt_token_ids",
    "row_listener",
    "select_rows",
    "smoothed_nll_max",
    "teacher_forced_metrics",
    "teacher_forced_role_errors",
    "teacher_forced_stats",
    "token_logprobs",
]
