"""Plain greedy decoding of one row by ``model.generate``: the reference the decoding tests compare with."""

import torch


def plain_greedy(model, prefix: list[int], limit: int, eos: int, pad: int = 0) -> list[int]:
    """Greedy decoding of one unpadded row on the model's device, cut after its first ``eos``."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prefix], device=model.device),
            attention_mask=torch.ones(1, len(prefix), dtype=torch.long, device=model.device),
            max_new_tokens=limit,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
        )[0, len(prefix) :].tolist()
    return out[: out.index(eos) + 1] if eos in out else out
