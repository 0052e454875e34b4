"""The two-stage certificate with a data-dependent prior (a sweep cell's default).

S is split in order: S_p (the first n_p = ⌊fraction·n⌉ examples) and S_b (the other n_b).

1. **Prior centre.** P = an SFT adapter trained on S_p only (the caller trains it).
2. **Prior scale.** σ_p = c·r, r the RMS of the adapter's initial A factors, c the largest
   candidate whose per-example Monte-Carlo risk on ≤ ``select`` examples of S_p is within
   ``tolerance`` of P's point risk there, tried from the largest down (``search: ascending``:
   the largest before the first that fails, tried from the smallest up). The
   choice reads S_p only, so the prior N(P, σ_p² I) over the LoRA factors is fixed before S_b
   is seen: it costs no δ (K = 1).
3. **Posterior.** N(Q, diag s_m²) (one scale per module m) starts at (P, σ_p) and is trained on
   S_b by the PAC-Bayes objective f-quad with the sequence surrogate 1 − p(y | x) for
   ``epochs`` passes. Its mean Q is the model the cell reports: the one whose test risk the
   report shows, trained on all n examples (S_p by SFT, S_b by the objective).
4. **Bound** on S_b only: U_MC (one own draw per example, kl⁻¹ at δ_MC),
   KL(N(Q, diag s²) ‖ N(P, σ_p² I)) = ½ Σ_m [d_m (s_m²/σ_p² − 1 + ln(σ_p²/s_m²)) + ‖Q_m − P_m‖²/σ_p²]
   nats (closed form), and Seeger's bound with n = n_b at δ_bound.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..adapters import init_state_from_factors, lora_factors
from ..posteriors import LearnedGaussianLoRA, Prior, learned_family, learned_kl, prior_centre_rms
from ..training.pacbayes_objective import PacBayesConfig, train_pacbayes
from .certificate import Certificate
from .config import BoundConfig, CertifySettings, EvalConfig, PriorConfig, TVConfig
from .engine import GridOptions, certificate_core, plan_delta
from .losses import Losses, example_losses
from .stochastic import stochastic_risk
from .tv_term import examples_tv_term

POSTERIOR_FILE = "posterior.json"
"""Beside a two-stage cell's adapter (the mean Q): σ_p, the learned scales and the KL."""


@dataclass(frozen=True)
class PriorSigma:
    """The prior scale chosen on the prior's own part: σ_p = multiple × rms, and every candidate
    tried (multiple, σ, point risk, MC risk)."""

    sigma: float
    multiple: float
    rms: float
    rows: list[dict]
    rule: str


SELECT_SEED = 40_009
"""Offset of the seed of σ_p's selection draws, apart from the MC bound's (the cell's seed), the
stochastic test risk's and the label-free draws'."""


def choose_prior_sigma(
    model: torch.nn.Module, losses: Losses, prior: PriorConfig, rms: float, *, seed: int = 0
) -> PriorSigma:
    """σ_p for the prior centred at ``model`` (P), from ``losses`` on examples of S_p only.

    A candidate c *passes* when the sampled risk at c·rms is at most P's point risk + tolerance.
    ``descending``: the largest candidate that passes, trying from the largest down (one
    evaluation when it passes, as it usually does at the default candidates). ``ascending``: the
    largest before the first that fails, trying from the smallest up. Either reads S_p only."""
    point = losses.point(model)
    descending = prior.search == "descending"
    rows, kept = [], None
    for mult in sorted(prior.sigma_multiples, reverse=descending):
        mc = stochastic_risk(model, losses, mult * rms, "lora", seed=seed).mean
        rows.append({"multiple": mult, "sigma": mult * rms, "point_risk": point, "mc_risk": mc})
        passes = mc <= point + prior.tolerance
        kept = mult if passes else kept
        if passes == descending:  # descending stops at the first pass, ascending at the first failure
            break
    rule = (
        f"the largest candidate whose sampled risk is within {prior.tolerance} of the point risk, tried from the largest down"
        if descending
        else f"largest candidate before the first whose sampled risk exceeds the point risk + {prior.tolerance}"
    )
    if kept is None:  # even the smallest loses too much: keep it, and say so
        kept, rule = min(prior.sigma_multiples), rule + " (none did: the smallest)"
    return PriorSigma(kept * rms, kept, rms, rows, rule + f", on {losses.n} examples of the prior's part")


def refine_posterior(
    model: torch.nn.Module, tokenizer: Any, examples: list, sigma_p: float, prior: PriorConfig, *, seed: int = 0
) -> tuple[LearnedGaussianLoRA, list[float]]:
    """Stage 2: train N(Q, diag s²) from (P, σ_p) on ``examples`` (S_b) by f-quad with the sequence
    surrogate; the prior N(P, σ_p²) is centred at the model's factors on entry."""
    centre = init_state_from_factors(lora_factors(model))
    steps = max(1, math.ceil(prior.epochs * len(examples) / prior.batch_size))
    # Adam moves each coordinate by about lr per step: a step scaled to σ_p keeps the KL small.
    cfg = PacBayesConfig(
        prior_sigma=sigma_p, init_scale=1.0, steps=steps, lr=0.02 * sigma_p, lr_scale=1e-2,
        batch_size=prior.batch_size, surrogate="sequence", seed=seed,
    )  # fmt: skip
    for p in model.parameters():
        p.requires_grad_(False)
    for f_name, p in model.named_parameters():
        if "lora_" in f_name:
            p.requires_grad_(True)
    prompts, responses = [e.prompt for e in examples], [e.response for e in examples]
    return train_pacbayes(model, tokenizer, prompts, responses, cfg, centre=centre)


def _bound_config(bound: BoundConfig, sigma_p: float) -> BoundConfig:
    """The sweep's bound settings at the one prior scale σ_p, in the LoRA-factor space."""
    return BoundConfig(
        sigmas=[sigma_p], space="lora", delta=bound.delta, mc_fraction=bound.mc_fraction,
        tv_fraction=bound.tv_fraction, m=bound.m, mc_scheme="per_example", loss=bound.loss,
        mc_examples=bound.mc_examples, catoni_c=bound.catoni_c,
    )  # fmt: skip


def posterior_certificate(
    model: torch.nn.Module,
    losses: Losses,
    tv_inputs: tuple[list, list, TVConfig],
    bound: BoundConfig,
    state: dict,
    *,
    seed: int = 0,
) -> Certificate:
    """The certificate of N(Q, diag s²) against N(P, σ_p²) on S_b, from ``state`` (σ_p, the
    module scales, the KL in nats and what the certificate says about the prior)."""
    cfg = _bound_config(bound, state["sigma_p"])
    note = f"data-dependent prior: SFT adapter on the first {state['n_prior']} examples, bound on the other {losses.n}"
    plan = plan_delta(cfg, losses.n, prior_note=note)
    train, test, tv_cfg = tv_inputs
    tv = examples_tv_term(train, test, tv_cfg, plan.tv, seed)
    scales = state["scales"]
    space = "lora (data-dependent prior; learned per-module posterior scales)"
    family = learned_family(model, scales, Prior(sigma=state["sigma_p"]), kl=state["kl"], space=space)
    info = {k: v for k, v in state.items() if k != "scales"} | {"kind": "data-dependent", "posterior_scales": scales}
    return certificate_core(
        model, losses, tv, cfg, plan, seed=seed, options=GridOptions(family=family), prior_info=info
    )


def certify_two_stage(
    model: torch.nn.Module,
    tokenizer: Any,
    train_examples: list,
    test_examples: list,
    *,
    prior: PriorConfig,
    bound: BoundConfig,
    tv: TVConfig,
    evaluation: EvalConfig,
    settings: CertifySettings,
) -> tuple[Certificate, dict]:
    """Stages 2–4 for ``model`` = P, a peft model trained on the first ``prior.split(n)`` examples
    (``settings.init``: its initial factors, for the RMS σ_p is a multiple of; ``settings.judge``
    and ``settings.seed`` as in ``certify``). On return ``model`` holds the posterior mean Q;
    returns the certificate and the state to save beside Q."""
    judge, init, seed = settings.judge, settings.init, settings.seed
    n_p = prior.split(len(train_examples))
    s_p, s_b = list(train_examples[:n_p]), list(train_examples[n_p:])
    select = example_losses(tokenizer, s_p[: prior.select], bound.loss, judge=judge, evaluation=evaluation, gold=True)
    rms = prior_centre_rms(model, "lora", init=init)
    # its own noise stream: σ_p (and through it Q) must not depend on draws the MC bound reuses
    chosen = choose_prior_sigma(model.eval(), select, prior, rms, seed=SELECT_SEED + seed)
    post, history = refine_posterior(model, tokenizer, s_b, chosen.sigma, prior, seed=seed)
    kl = float(post.kl().item())
    scales = post.module_scales()
    post.remove()
    model.eval()
    state = {
        "n_prior": n_p,
        "centre": f"SFT adapter on the first {n_p} of the {len(train_examples)} training examples",
        "sigma_p": chosen.sigma,
        "sigma_choice": asdict(chosen),
        "stage2": {
            "objective": "f-quad, sequence surrogate",
            "steps": len(history),
            "first": history[0],
            "last": history[-1],
        },
        "kl": kl,
        "scales": scales,
    }
    losses = example_losses(tokenizer, s_b, bound.loss, judge=judge, evaluation=evaluation, gold=True)
    cert = posterior_certificate(model, losses, (train_examples, test_examples, tv), bound, state, seed=seed)
    return cert, state


def recertify_two_stage(
    model: torch.nn.Module, prior_centre: Any, tokenizer: Any, train_examples: list, test_examples: list, *,
    bound: BoundConfig, tv: TVConfig, evaluation: EvalConfig, state: dict, settings: CertifySettings,
) -> Certificate:  # fmt: skip
    """The certificate of a finished two-stage cell from its saved adapters (Q = ``model``, P =
    ``prior_centre``) and state, with the KL recomputed from the factors (not read back:
    :func:`~pacbayes_sft.posteriors.learned_kl`); ``settings.judge`` and ``settings.seed`` as in
    ``certify``."""
    judge, seed = settings.judge, settings.seed
    state = dict(state) | {"kl": learned_kl(model, prior_centre, state["scales"], state["sigma_p"])}
    s_b = list(train_examples[state["n_prior"] :])
    losses = example_losses(tokenizer, s_b, bound.loss, judge=judge, evaluation=evaluation, gold=True)
    return posterior_certificate(model.eval(), losses, (train_examples, test_examples, tv), bound, state, seed=seed)


def save_posterior_state(state: dict, adapter_dir: str | Path) -> Path:
    """Write ``state`` (σ_p, scales, KL, …) as ``posterior.json`` beside the adapter of Q."""
    path = Path(adapter_dir) / POSTERIOR_FILE
    path.write_text(json.dumps(state, indent=1))
    return path


def load_posterior_state(adapter_dir: str | Path) -> dict:
    """The state :func:`save_posterior_state` wrote; ValueError when the adapter has none."""
    path = Path(adapter_dir) / POSTERIOR_FILE
    if not path.is_file():
        raise ValueError(f"adapter {str(adapter_dir)!r} has no {POSTERIOR_FILE}: it was not trained in two stages")
    return json.loads(path.read_text())
