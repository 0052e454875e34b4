"""Bounded per-example losses from one teacher-forced forward pass.

For a batch of token ids with a response mask (1 on the tokens the model must predict):

- token error rate: fraction of response tokens whose argmax prediction is wrong, in [0, 1];
- exact match: every response token's argmax equals the reference. This is equivalent to
  "greedy decoding reproduces the reference", since greedy decoding conditions on its own
  previous tokens, which are the reference tokens exactly when all earlier argmaxes matched;
- smoothed NLL: −ln((1−α)p + α/V) ∈ [0, ln(1 + (1−α)V/α)] (nats), averaged over response tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class TeacherForcedStats:
    """Per-example results (1-D tensors of length batch), and ``wrong``: the (batch, T − 1) mask of
    response tokens whose argmax prediction is wrong (column t − 1 is token t)."""

    token_error: torch.Tensor
    exact_match: torch.Tensor
    nll: torch.Tensor
    smoothed_nll: torch.Tensor
    n_tokens: torch.Tensor
    wrong: torch.Tensor


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """ln p(x_t | x_<t) for t = 1..T−1 (nats), shape (batch, T − 1): logits at position t − 1
    scored against token t. Negative ids (e.g. −100 labels) are gathered at id 0; mask them."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1)


def smoothed_nll_max(alpha: float, vocab_size: int) -> float:
    """Upper end of the smoothed NLL range: ln(1 + (1−α)V/α) nats."""
    return math.log1p((1.0 - alpha) * vocab_size / alpha)


@torch.no_grad()
def teacher_forced_stats(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    alpha: float = 0.01,
) -> TeacherForcedStats:
    """Teacher-forced statistics for each sequence of a right-padded batch.

    ``response_mask[b, t] = 1`` marks token t of sequence b as a response token, predicted
    from positions < t.
    """
    if input_ids.shape != response_mask.shape:
        raise ValueError(
            f"response_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(response_mask.shape)}"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = input_ids[:, 1:]
    mask = response_mask[:, 1:].bool()
    n_tok = mask.sum(dim=1)
    if (n_tok == 0).any():
        raise ValueError("every sequence needs at least one response token")
    tok_logp = token_logprobs(logits, input_ids)
    wrong = (logits[:, :-1].argmax(dim=-1) != targets) & mask
    vocab = logits.shape[-1]
    smoothed = -torch.log((1.0 - alpha) * tok_logp.exp() + alpha / vocab)
    maskf = mask.float()
    return TeacherForcedStats(
        token_error=wrong.sum(dim=1).float() / n_tok,
        exact_match=(wrong.sum(dim=1) == 0).float(),
        nll=-(tok_logp * maskf).sum(dim=1) / n_tok,
        smoothed_nll=(smoothed * maskf).sum(dim=1) / n_tok,
        n_tokens=n_tok,
        wrong=wrong,
    )
