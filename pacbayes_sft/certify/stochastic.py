"""The stochastic (Gibbs) model beyond the σ grid: its risk on any examples, and the certificate
of a posterior learned by a PAC-Bayes objective (one prior scale, fixed before training)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import defaults
from ..bounds import kl_inverse_lower, kl_inverse_upper
from ..estimators.mc_risk import mc_stochastic_risk_per_example
from ..posteriors import GaussianPosterior, learned_family
from .certificate import Certificate, TVTerm
from .config import BoundConfig
from .engine import GridOptions, certificate_core, plan_delta
from .losses import Losses


@dataclass(frozen=True)
class StochasticRisk:
    """E_π R over a set of examples, by Monte Carlo (one posterior draw per example), with a
    two-sided (1 − δ) interval from the kl inequality on the N independent losses."""

    mean: float
    lower: float
    upper: float
    n: int
    sigma: float
    delta: float


def stochastic_risk(
    model: torch.nn.Module,
    losses: Losses,
    sigma: float | dict[str, float],
    space: str,
    *,
    delta: float = defaults.DELTA,
    seed: int = 0,
) -> StochasticRisk:
    """The stochastic model's risk on the examples behind ``losses`` (e.g. the test set): what the
    bound is a bound on. Every example gets its own posterior draw; the interval is
    [kl⁻¹_lower, kl⁻¹_upper](R̂, ln(4/δ)/N), each side at δ/2."""
    post = GaussianPosterior(model, sigma, space, seed=seed)
    mc = mc_stochastic_risk_per_example(
        post, losses.example, losses.n, 1, delta / 2, batch_loss_fn=losses.batch, batch_size=losses.batch_size
    )
    c = float(np.log(4.0 / delta) / mc.m)
    lo, hi = float(kl_inverse_lower(mc.mean, c)), float(kl_inverse_upper(mc.mean, c))
    # with per-module scales (a learned posterior) the recorded sigma is their mean
    return StochasticRisk(float(mc.mean), lo, hi, mc.m, post.sigma, float(delta))


def certify_learned_posterior(
    model: torch.nn.Module,
    posterior: Any,
    losses: Losses,
    tv: TVTerm,
    *,
    loss: str,
    prior_info: dict,
    delta: float = defaults.DELTA,
    mc_fraction: float | None = None,
    seed: int = 0,
) -> Certificate:
    """The certificate of a posterior trained by a PAC-Bayes objective
    (:class:`~pacbayes_sft.posteriors.learned.LearnedGaussianLoRA`): N(μ, s_m²) per
    module over the LoRA factors against the prior N(θ₀, σ_p²), σ_p fixed before training (so no
    grid is paid for: K = 1); the KL is in nats.

    ``loss`` names the loss ``losses`` computes (one of ``LOSSES``). ``prior_info`` states where
    the prior is centred and on which data (e.g. ``{"kind": "data-free", "centre": "the adapter's
    initial factors"}``); ``losses`` must cover only examples the centre never saw.
    ``mc_fraction``: the share of δ for the MC bound (default: :class:`BoundConfig`'s). The
    parametrisation is removed; μ stays as the adapter's weights."""
    kl = float(posterior.kl().item())
    scales, sp, prior = posterior.module_scales(), posterior.prior_sigma, posterior.prior()
    posterior.remove()
    family = learned_family(model, scales, prior, kl=kl)
    fraction = {} if mc_fraction is None else {"mc_fraction": mc_fraction}
    cfg = BoundConfig(sigmas=[sp], delta=delta, m=1, loss=loss, **fraction)
    note = f"prior sigma {sp:g} fixed before training, learned per-module posterior scales"
    plan = plan_delta(cfg, losses.n, tv_interval=False, prior_note=note)
    info = dict(prior_info) | {"sigma": sp, "posterior_scales": scales}
    return certificate_core(
        model, losses, tv, cfg, plan, seed=seed, options=GridOptions(family=family), prior_info=info
    )
