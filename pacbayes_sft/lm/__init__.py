"""Language-model primitives shared by every layer: encoding (prompt, response) pairs into
token batches, teacher-forced bounded losses, batched greedy decoding (:func:`greedy`, with or
without references to check) and generation judged item by item (:func:`generate_and_judge`)."""

from .decoding import Greedy, greedy, greedy_continue, greedy_verified
from .encoding import Encoded, collate, collate_prompts_left, encode, length_grouped_batches
from .generation import Judged, generate_and_judge, judge_texts, judge_tokens
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
    "Greedy",
    "Judged",
    "TeacherForcedStats",
    "collate",
    "collate_prompts_left",
    "encode",
    "generate_and_judge",
    "generate_texts",
    "generate_token_ids",
    "greedy",
    "greedy_continue",
    "greedy_generate",
    "greedy_verified",
    "judge_texts",
    "judge_tokens",
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
