"""Evaluation by difficulty slice, as tidy rows (model, slice, metric, value, n_examples).

Metrics per example, averaged per slice:

- ``exact_match``: teacher-forced — every response token is the argmax given the reference
  prefix. One forward pass; equal to "greedy decoding reproduces the reference".
- ``token_error``: fraction of response tokens whose argmax is wrong (a loss in [0, 1]).
- ``nll``: mean response-token negative log-likelihood (nats).
- ``smoothed_nll``: mean of −ln((1−α)p + α/V), bounded in [0, ln(1 + (1−α)V/α)].
- ``answer_accuracy``: batched greedy generation with a KV cache, parsed and checked by the
  task's verifier (only when a verifier is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .encoding import collate, collate_prompts_left, encode
from .teacher_forcing import teacher_forced_stats


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def teacher_forced_metrics(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 64, alpha: float = 0.01
) -> dict[str, list[float]]:
    """Per-example teacher-forced statistics (lists aligned with the inputs).

    Examples are sorted by length for batching (less padding), results returned in input order.
    """
    enc = encode(tokenizer, prompts, responses)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    out = {k: [0.0] * len(enc) for k in ("exact_match", "token_error", "nll", "smoothed_nll")}
    device = next(model.parameters()).device
    for sl in _batches(len(order), batch_size):
        idx = order[sl]
        b = collate([enc[i] for i in idx], tokenizer.pad_token_id)
        st = teacher_forced_stats(
            model, b["input_ids"].to(device), b["response_mask"].to(device), b["attention_mask"].to(device), alpha=alpha
        )
        for j, i in enumerate(idx):
            out["exact_match"][i] = float(st.exact_match[j])
            out["token_error"][i] = float(st.token_error[j])
            out["nll"][i] = float(st.nll[j])
            out["smoothed_nll"][i] = float(st.smoothed_nll[j])
    return out


@torch.no_grad()
def teacher_forced_role_errors(
    model,
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    roles: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
) -> dict[str, tuple[int, int]]:
    """Teacher-forced argmax errors grouped by the role of each response token.

    ``roles[i]`` names the role of every token of ``responses[i]`` (as the tokenizer splits it);
    the closing <eos> gets the role ``"eos"``. Returns ``{role: (errors, tokens)}``, which says
    which skill a model lacks (e.g. looking values up against doing the arithmetic).
    """
    enc = encode(tokenizer, prompts, responses)
    if len(roles) != len(enc):
        raise ValueError(f"roles must have one entry per example ({len(enc)}), got {len(roles)}")
    for i, (e, r) in enumerate(zip(enc, roles)):
        if len(r) != len(e.ids) - e.prompt_len - 1:
            raise ValueError(
                f"roles[{i}] must name each of the {len(e.ids) - e.prompt_len - 1} response tokens, got {len(r)}"
            )
    counts: dict[str, list[int]] = {}
    device = next(model.parameters()).device
    for sl in _batches(len(enc), batch_size):
        idx = range(len(enc))[sl]
        b = collate([enc[i] for i in idx], tokenizer.pad_token_id)
        st = teacher_forced_stats(
            model, b["input_ids"].to(device), b["response_mask"].to(device), b["attention_mask"].to(device)
        )
        wrong_all = st.wrong.cpu()
        for j, i in enumerate(idx):
            e = enc[i]
            wrong = wrong_all[j, e.prompt_len - 1 : len(e.ids) - 1].tolist()  # column t − 1 is token t
            for role, w in zip([*roles[i], "eos"], wrong):
                c = counts.setdefault(role, [0, 0])
                c[0] += int(w)
                c[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


@torch.no_grad()
def greedy_generate(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 256, batch_size: int = 64
) -> list[str]:
    """Greedy continuations of ``<bos> prompt`` (left-padded batches, KV cache), decoded to text."""
    enc = encode(tokenizer, prompts, ["x"] * len(prompts)) if prompts else []
    order = sorted(range(len(enc)), key=lambda i: enc[i].prompt_len)
    texts = [""] * len(enc)
    device = next(model.parameters()).device
    for sl in _batches(len(order), batch_size):
        idx = order[sl]
        b = collate_prompts_left([enc[i] for i in idx], tokenizer.pad_token_id)
        gen = model.generate(
            input_ids=b["input_ids"].to(device),
            attention_mask=b["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, b["input_ids"].shape[1] :]
        for j, i in enumerate(idx):
            texts[i] = tokenizer.decode(new[j], skip_special_tokens=True)
    return texts


def evaluate_slices(
    model,
    tokenizer,
    slices: Mapping[Any, Sequence[Any]],
    *,
    model_name: str = "model",
    verifier: Callable[[str, str], bool] | None = None,
    generate: bool = True,
    batch_size: int = 64,
    alpha: float = 0.01,
    max_new_tokens: int = 256,
) -> list[dict]:
    """Tidy rows of every metric for each slice.

    ``slices`` maps a slice label (e.g. an op count) to examples with ``.prompt`` and ``.response``
    attributes (or dicts with those keys). ``verifier(prompt, output) -> bool`` checks an answer.
    """
    rows = []
    model.eval()
    for label, examples in slices.items():
        if not examples:
            raise ValueError(f"slice {label!r} has no examples")
        prompts = [e["prompt"] if isinstance(e, Mapping) else e.prompt for e in examples]
        responses = [e["response"] if isinstance(e, Mapping) else e.response for e in examples]
        tf = teacher_forced_metrics(model, tokenizer, prompts, responses, batch_size=batch_size, alpha=alpha)
        n = len(prompts)
        for metric, vals in tf.items():
            rows.append(
                {"model": model_name, "slice": label, "metric": metric, "value": sum(vals) / n, "n_examples": n}
            )
        if generate and verifier is not None:
            outs = greedy_generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
            acc = sum(bool(verifier(p, o)) for p, o in zip(prompts, outs)) / n
            rows.append(
                {"model": model_name, "slice": label, "metric": "answer_accuracy", "value": acc, "n_examples": n}
            )
    return rows
