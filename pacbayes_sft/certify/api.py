"""One call from (base, adapter, train set, test set) to every term of Proposition 4.1.

The pipeline is load → losses (:mod:`.losses`) → TV (:mod:`.tv_term`) →
:func:`~pacbayes_sft.certify.engine.certificate_core` → :class:`Certificate`. Options travel as
typed objects: :class:`BoundConfig`, :class:`TVConfig`, :class:`EvalConfig` and, for a
data-dependent prior, :class:`DataPrior`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..adapters import INIT_FILE, attach_adapter
from ..data.scorers import Judge
from ..data.tokenizer import load_tokenizer
from ..training.models import load_causal_lm
from .certificate import Certificate
from .config import BoundConfig, EvalConfig, TVConfig
from .engine import GridOptions, certificate_core, module_families, plan_delta
from .losses import example_losses, prompts_and_responses
from .tv_term import examples_tv_term


@dataclass(frozen=True)
class DataPrior:
    """A data-dependent prior: an adapter trained on the first ``n_prior`` training examples only.
    The prior is centred at it, and the bound uses the remaining n − n_prior examples."""

    adapter: Any
    n_prior: int

    def __post_init__(self) -> None:
        if self.adapter is None or not isinstance(self.n_prior, int) or self.n_prior < 1:
            raise ValueError(
                "a data-dependent prior needs both prior.adapter and n_prior > 0 (the examples it was trained "
                f"on), got n_prior={self.n_prior!r}"
            )

    def info(self, n_bound: int) -> dict:
        """What the certificate states about this prior."""
        centre = str(self.adapter) if isinstance(self.adapter, (str, Path)) else "adapter"
        return {"kind": "data-dependent", "centre": centre, "n_prior": self.n_prior, "n_bound": n_bound}


def _load(base: Any, adapter: Any, tokenizer: Any):
    if tokenizer is None:
        if not isinstance(base, (str, Path)):
            raise ValueError("tokenizer is required when base is not a checkpoint directory")
        tokenizer = load_tokenizer(base)
    if isinstance(adapter, torch.nn.Module):
        return adapter.eval(), tokenizer
    base_model = load_causal_lm(base) if isinstance(base, (str, Path)) else base
    return attach_adapter(base_model, adapter, base_name=str(base)), tokenizer


def _typed(value: Any, cls: type, name: str) -> Any:
    """``value``, or ``cls()`` when None; ValueError naming the argument when it is another type."""
    if value is None:
        return cls()
    if not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise ValueError(f"{name} must be {article} {cls.__name__} or None, got {type(value).__name__}")
    return value


def _check_examples(train_examples: Sequence[Any], test_examples: Sequence[Any], prior: DataPrior | None) -> None:
    if not train_examples:
        raise ValueError("train_examples must not be empty")
    if prior is not None and not prior.n_prior < len(train_examples):
        raise ValueError(f"prior.n_prior must be an integer in [1, {len(train_examples)}), got {prior.n_prior!r}")
    if not test_examples:
        raise ValueError("test_examples must not be empty")
    prompts_and_responses(train_examples, "train_examples")
    prompts_and_responses(test_examples, "test_examples")


def certify(
    base: Any,
    adapter: Any,
    train_examples: Sequence[Any],
    test_examples: Sequence[Any],
    *,
    bound: BoundConfig | None = None,
    tv: TVConfig | None = None,
    evaluation: EvalConfig | None = None,
    prior: DataPrior | None = None,
    judge: Judge | str | None = None,
    tokenizer: Any = None,
    init: Any = None,
    seed: int = 0,
    progress: bool = False,
) -> Certificate:
    """The two-gap certificate of one adapter.

    Args:
        base: base checkpoint directory (or model object, then pass ``tokenizer``).
        adapter: adapter directory, or a peft model already wrapping the base.
        train_examples, test_examples: items with ``prompt`` and ``response`` (dicts or objects);
            the training examples must be the ones the adapter was trained on (n = their number).
        bound, tv, evaluation: :class:`BoundConfig`, :class:`TVConfig` and :class:`EvalConfig`
            (batch size, longest generated answer); defaults when omitted.
        prior: a :class:`DataPrior` (an adapter trained on the first ``n_prior`` training
            examples); the bound then uses the other n − n_prior (the certificate and ledger say so).
        judge: for loss answer_error, a :data:`~pacbayes_sft.data.scorers.Judge`
            ``(example, text) -> bool`` or a scorer name (default ``defaults.SCORER``, compared
            with each example's ``answer``).
        init: initial adapter factors for space="lora" (default: ``lora_init.safetensors``
            beside an adapter directory).
        progress: a bar (terminals only) over the posterior draws of each σ.

    Returns a :class:`Certificate`; ``two_gap, doc = certify(...)`` still unpacks as before.
    """
    cfg, tv_cfg = _typed(bound, BoundConfig, "bound"), _typed(tv, TVConfig, "tv")
    ev = _typed(evaluation, EvalConfig, "evaluation")
    if prior is not None and not isinstance(prior, DataPrior):
        raise ValueError(f"prior must be a DataPrior or None, got {type(prior).__name__}")
    _check_examples(train_examples, test_examples, prior)
    model, tok = _load(base, adapter, tokenizer)
    n_prior = prior.n_prior if prior is not None else 0
    # With a data-dependent prior the bound rests only on the examples the prior never saw.
    bound_examples = list(train_examples)[n_prior:]
    losses = example_losses(tok, bound_examples, cfg.loss, judge=judge, evaluation=ev, gold=True)
    note = f"prior: adapter trained on the first {n_prior} examples, bound on the other {losses.n}" if n_prior else ""
    families = len(module_families(model)) if cfg.per_module_sigma else 0
    plan = plan_delta(cfg, losses.n, prior_note=note, families=families)
    if init is None and cfg.space == "lora" and isinstance(adapter, (str, Path)):
        init = Path(adapter) / INIT_FILE  # the initial factors saved beside the adapter
    tv_term = examples_tv_term(train_examples, test_examples, tv_cfg, plan.tv, seed)
    options = GridOptions(init=init, prior=prior.adapter if prior else None, progress=progress)
    info = prior.info(losses.n) if prior is not None else None
    return certificate_core(model, losses, tv_term, cfg, plan, seed=seed, options=options, prior_info=info)
