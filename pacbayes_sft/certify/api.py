"""One call from (base, adapter, train set, test set) to every term of Proposition 4.1.

The pipeline is load → losses (:mod:`.losses`) → TV (:mod:`.tv_term`) →
:func:`~pacbayes_sft.certify.engine.certificate_core` → :class:`Certificate`. Options travel as
typed objects: :class:`BoundConfig`, :class:`TVConfig`, :class:`EvalConfig`, the prior as a
:class:`~pacbayes_sft.certify.config.PriorConfig`, a posterior family
(:class:`~pacbayes_sft.posteriors.PosteriorFamily`) and the run's :class:`CertifySettings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..adapters import INIT_FILE, attach_adapter
from ..data.tokenizer import load_tokenizer
from ..posteriors import PosteriorFamily
from ..training.models import load_causal_lm
from .certificate import Certificate
from .config import BoundConfig, CertifySettings, EvalConfig, PriorConfig, TVConfig
from .engine import GridOptions, certificate_core, module_families, plan_delta
from .losses import example_losses, prompts_and_responses
from .tv_term import examples_tv_term
from .two_stage import load_posterior_state, recertify_two_stage


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


def _check_examples(train_examples: Sequence[Any], test_examples: Sequence[Any]) -> None:
    if not train_examples:
        raise ValueError("train_examples must not be empty")
    if not test_examples:
        raise ValueError("test_examples must not be empty")
    prompts_and_responses(train_examples, "train_examples")
    prompts_and_responses(test_examples, "test_examples")


def _prior_info(prior: PriorConfig, n_prior: int, n_bound: int) -> dict:
    """What the certificate states about a data-dependent (grid) prior."""
    centre = str(prior.adapter) if isinstance(prior.adapter, (str, Path)) else "adapter"
    return {"kind": "data-dependent", "centre": centre, "n_prior": n_prior, "n_bound": n_bound}


def _checked_prior(prior: Any, family: Any, n: int) -> tuple[PriorConfig, int]:
    """The prior (None: the data-free one) and n_prior, the training examples the bound leaves out."""
    prior = _typed(prior, PriorConfig, "prior") if prior is not None else PriorConfig(kind="pretrained")
    if prior.kind == "pretrained":
        return prior, 0
    if prior.adapter is None:
        raise ValueError(
            f"prior.adapter (the prior's centre, trained on the first examples) is required for kind {prior.kind!r}"
        )
    if family is not None:
        raise ValueError(
            f"family must be None with a {prior.kind!r} prior (the family is the isotropic one around the adapter)"
        )
    if n < 2:
        raise ValueError(f"a data-dependent prior needs at least 2 train_examples, got {n}")
    return prior, (prior.split(n) if prior.kind == "grid" else 0)


def certify(
    base: Any,
    adapter: Any,
    train_examples: Sequence[Any],
    test_examples: Sequence[Any],
    *,
    bound: BoundConfig | None = None,
    tv: TVConfig | None = None,
    evaluation: EvalConfig | None = None,
    prior: PriorConfig | None = None,
    family: PosteriorFamily | None = None,
    settings: CertifySettings | None = None,
) -> Certificate:
    """The two-gap certificate of one adapter.

    Args:
        base: base checkpoint directory (or model object, then pass ``settings.tokenizer``).
        adapter: adapter directory, or a peft model already wrapping the base.
        train_examples, test_examples: items with ``prompt`` and ``response`` (dicts or objects);
            the training examples must be the ones the adapter was trained on (n = their number).
        bound, tv, evaluation: :class:`BoundConfig`, :class:`TVConfig` and :class:`EvalConfig`
            (batch size, longest generated answer); defaults when omitted.
        prior: a :class:`PriorConfig`; None (or kind ``pretrained``): the data-free prior. Kind
            ``grid``: centred at ``prior.adapter``, trained on the first ``prior.split(n)``
            training examples; the bound uses the others (the certificate and ledger say so).
            Kind ``two_stage``: ``adapter`` is a finished two-stage posterior mean Q (its
            ``posterior.json`` beside it) and ``prior.adapter`` its prior centre P.
        family: the posterior family and its σ grid
            (:class:`~pacbayes_sft.posteriors.PosteriorFamily`, built on the loaded ``adapter``
            model); default: the isotropic Gaussian around the adapter on the ``bound`` grid.
        settings: :class:`CertifySettings` (judge, seed, tokenizer, init, progress).

    Returns a :class:`Certificate`; ``two_gap, doc = certify(...)`` still unpacks as before.
    """
    cfg, tv_cfg = _typed(bound, BoundConfig, "bound"), _typed(tv, TVConfig, "tv")
    ev, run = _typed(evaluation, EvalConfig, "evaluation"), _typed(settings, CertifySettings, "settings")
    if family is not None and not isinstance(family, PosteriorFamily):
        raise ValueError(f"family must be a PosteriorFamily or None, got {type(family).__name__}")
    _check_examples(train_examples, test_examples)
    pc, n_prior = _checked_prior(prior, family, len(train_examples))
    model, tok = _load(base, adapter, run.tokenizer)
    if pc.kind == "two_stage":
        if not isinstance(adapter, (str, Path)):
            raise ValueError("a two_stage prior needs adapter as the folder of Q (its posterior.json beside it)")
        return recertify_two_stage(
            model, pc.adapter, tok, list(train_examples), list(test_examples), bound=cfg, tv=tv_cfg,
            evaluation=ev, state=load_posterior_state(adapter), settings=run,
        )  # fmt: skip
    if family is not None:
        if cfg.per_module_sigma:
            raise ValueError("bound.per_module_sigma searches the isotropic family only; use it without family")
        cfg = replace(cfg, sigmas=list(family.grid))  # the δ plan pays for the family's own grid
    # With a data-dependent prior the bound rests only on the examples the prior never saw.
    bound_examples = list(train_examples)[n_prior:]
    losses = example_losses(tok, bound_examples, cfg.loss, judge=run.judge, evaluation=ev, gold=True)
    note = f"prior: adapter trained on the first {n_prior} examples, bound on the other {losses.n}" if n_prior else ""
    families = len(module_families(model)) if cfg.per_module_sigma else 0
    plan = plan_delta(cfg, losses.n, prior_note=note, families=families)
    init = run.init
    if init is None and cfg.space == "lora" and isinstance(adapter, (str, Path)):
        init = Path(adapter) / INIT_FILE  # the initial factors saved beside the adapter
    tv_term = examples_tv_term(train_examples, test_examples, tv_cfg, plan.tv, run.seed)
    centre = pc.adapter if n_prior else None
    options = GridOptions(init=init, prior=centre, family=family, progress=run.progress)
    info = _prior_info(pc, n_prior, losses.n) if n_prior else None
    return certificate_core(model, losses, tv_term, cfg, plan, seed=run.seed, options=options, prior_info=info)
