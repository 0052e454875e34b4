"""Which rows of a batch are still computing: the channel between a decoder that narrows its batch
and per-row forward hooks that must follow it.

A per-row posterior (:meth:`~pacbayes_sft.posteriors.GaussianPosterior.sample_rows`)
gives row r of every batch its own draw. When a decoder drops finished rows, or re-runs only
some rows, the hooks must know which of the original rows the narrowed batch holds, or row r
would be scored under another row's draw. The decoder calls :func:`select_rows` with the
original row indices it keeps; every listener registered on the model with
:func:`row_listener` receives them (``None``: all rows, in their original order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

_ATTR = "_pacbayes_row_listeners"

Listener = Callable[[torch.Tensor | None], None]


@contextmanager
def row_listener(model: torch.nn.Module, listener: Listener) -> Iterator[None]:
    """Register ``listener(rows)`` on ``model`` for the duration of the block; it is reset to all
    rows (``None``) on entry and on exit."""
    listeners = model.__dict__.setdefault(_ATTR, [])
    listeners.append(listener)
    listener(None)
    try:
        yield
    finally:
        listener(None)
        listeners.remove(listener)


def select_rows(model: torch.nn.Module, rows: torch.Tensor | None) -> None:
    """Tell every listener on ``model`` that the next batches hold original rows ``rows`` (a 1-D
    long tensor, in batch order), or all rows (``None``). Without listeners this does nothing."""
    for listener in model.__dict__.get(_ATTR, ()):
        listener(rows)


def has_row_listeners(model: torch.nn.Module) -> bool:
    """Whether per-row hooks on ``model`` follow :func:`select_rows` (a per-row draw is active)."""
    return bool(model.__dict__.get(_ATTR))
