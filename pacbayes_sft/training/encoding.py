"""Kept for compatibility: the encoding helpers live in :mod:`pacbayes_sft.lm.encoding`."""

from ..lm.encoding import Encoded, collate, collate_prompts_left, encode, length_grouped_batches

__all__ = ["Encoded", "collate", "collate_prompts_left", "encode", "length_grouped_batches"]
