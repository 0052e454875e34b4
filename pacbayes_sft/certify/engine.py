"""The engine of a certificate: a model, its losses on the n training examples and a TV term in;
every term of Proposition 4.1 out.

    total = U_MC + G_gen + G_ext,   U_MC ≥ E_π R̂_S (Monte-Carlo upper bound; by default every
                                     training example gets its own posterior draw),
    G_gen = Seeger bound(U_MC, KL, n) − U_MC,   G_ext = (b − a)·TV̂,   KL in nats

The failure probability δ is split in a ledger (:func:`plan_delta`): δ_MC for the Monte-Carlo
estimates, δ_TV for the TV lower bound, and the rest for the PAC-Bayes bound, spread over the K
prior scales of a finite σ grid (δ/K each, so choosing σ after seeing the data is paid for).
σ is chosen either as the grid point with the smallest bound, or by a sharpness search: the
largest σ whose sampled training risk exceeds the point risk by at most ``sharpness_tol``.

The PAC-Bayes part is certified (given i.i.d. training data and a prior fixed before training:
the pretrained weights). :func:`certificate_core` is the one engine behind ``certify``, the sweep
and the adapter demo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..adapters import lora_factors
from ..bounds import BOUNDS, DeltaLedger, finite_grid_delta, pac_bayes_bound, two_gap_bound
from ..estimators.mc_risk import mc_stochastic_risk, mc_stochastic_risk_per_example, subsample_examples
from ..posteriors import Posterior, PosteriorFamily, isotropic_family, module_family, prior_centre_rms
from ..versions import library_versions
from .certificate import Certificate, DeltaSplit, EmpiricalRisk, GenGap, KLTerm, SigmaChoice, TVTerm
from .config import BoundConfig
from .losses import Losses


@dataclass
class DeltaPlan:
    """The ledger and the δ each statement is made at."""

    ledger: DeltaLedger
    mc: float  # per σ setting evaluated
    tv: float
    bound: float  # per candidate prior
    settings: int = 0  # σ settings the MC budget was split over
    priors: int = 0  # candidate priors the PAC-Bayes budget was split over


def plan_delta(
    cfg: BoundConfig, n: int, *, tv_interval: bool = True, prior_note: str = "", families: int = 0
) -> DeltaPlan:
    """Split δ: mc_fraction over the K grid points' MC bounds, tv_fraction to the TV interval
    (only when there is one: ``tv_interval``), the rest to the PAC-Bayes bound at δ/K per grid point.

    With ``per_module_sigma`` and F module families, the search evaluates K + F·K σ settings
    (δ_MC is split over all of them) and may return any of the K + K^F candidate priors (δ_bound
    is split over all of those)."""
    ledger = DeltaLedger(cfg.delta)
    k, m = cfg.grid_size, cfg.draws
    k_mc, k_bound = (k + families * k, k + k**families) if cfg.per_module_sigma else (k, k)
    what = f"{m} shared samples" if cfg.mc_scheme == "shared" else f"{n} examples x {m} own draws"
    if cfg.mc_scheme == "per_example" and cfg.mc_examples is not None and n * m > cfg.mc_examples:
        what = f"{cfg.mc_examples} of the {n} examples drawn with replacement, one own draw each"
    d_mc = ledger.spend_fraction(f"mc_sampling ({k_mc} sigma settings x {what})", cfg.mc_fraction) / k_mc
    d_tv = ledger.spend_fraction("tv_lower_bound", cfg.tv_fraction) if tv_interval else 0.0
    note = f"; {prior_note}" if prior_note else ""
    d_bound = finite_grid_delta(ledger.spend_rest(f"pac_bayes (finite sigma grid, K={k_bound}{note})"), k_bound)
    return DeltaPlan(ledger, d_mc, d_tv, d_bound, k_mc, k_bound)


@dataclass(frozen=True)
class GridOptions:
    """What each σ setting is evaluated with, besides the :class:`BoundConfig` and the δ plan.

    init: the adapter's initial factors (space="lora"); prior: an adapter the prior is centred at
    instead of the pretrained weights (a data-dependent prior); family: the posterior family with
    its own σ grid (:class:`~pacbayes_sft.posteriors.PosteriorFamily`; default: the isotropic
    Gaussian around the adapter on the ``BoundConfig`` grid,
    :func:`~pacbayes_sft.posteriors.isotropic_family`); progress: a bar (terminals only) over the
    posterior draws of each σ."""

    init: Any = None
    prior: Any = None
    family: PosteriorFamily | None = None
    progress: bool = False


def sigma_grid(cfg: BoundConfig, model: Any, init: Any = None) -> tuple[list[float], float | None]:
    """The absolute σ grid of ``cfg`` and, for a relative grid, the reference RMS it was scaled by
    (of the parameters the prior is centred at: :func:`~pacbayes_sft.posteriors.prior_centre_rms`)."""
    if cfg.sigmas is not None:
        return list(cfg.sigmas), None
    rms = prior_centre_rms(model, cfg.space, init=init)
    return [m * rms for m in cfg.sigma_multiples], rms


def _mc_examples(cfg: BoundConfig, n: int, seed: int) -> list[int] | None:
    """The subsampled (example per draw) list when n·m exceeds ``mc_examples``, else None (all)."""
    if cfg.mc_examples is None or n * cfg.draws <= cfg.mc_examples:
        return None
    return subsample_examples(n, cfg.mc_examples, seed)


def family_for(
    model: Any, cfg: BoundConfig, options: GridOptions | None = None
) -> tuple[PosteriorFamily, float | None]:
    """The family the σ grid is evaluated over — ``options.family``, or the isotropic Gaussian
    around ``model`` on the grid of ``cfg`` — and, for a relative grid, the RMS it was scaled by."""
    opts = options or GridOptions()
    if opts.family is not None:
        if not isinstance(opts.family, PosteriorFamily):
            raise ValueError(f"family must be a PosteriorFamily or None, got {type(opts.family).__name__}")
        return opts.family, None
    grid, rms = sigma_grid(cfg, model, opts.init)
    return isotropic_family(model, cfg.space, grid, init=opts.init, prior=opts.prior), rms


def _evaluate(
    losses: Losses, cfg: BoundConfig, plan: DeltaPlan, sigma, seed: int, fam: PosteriorFamily, progress: bool
) -> dict:
    """One σ setting (a float, or module name → σ): KL (nats), MC risk at δ_MC and every bound at δ_bound."""
    post = fam.posterior(sigma, seed)
    if not isinstance(post, Posterior):
        raise ValueError(
            f"family.posterior(sigma, seed) must return a Posterior (sample, sample_rows, per_row, sigma, space, kl), "
            f"got {type(post).__name__}"
        )
    scheme = cfg.mc_scheme
    if cfg.mc_scheme == "per_example":
        sub = _mc_examples(cfg, losses.n, seed)
        scheme += "" if sub is None else f" (subsampled: {len(sub)} examples drawn with replacement, one draw each)"
        mc = mc_stochastic_risk_per_example(
            post,
            losses.example,
            losses.n,
            cfg.draws,
            plan.mc,
            progress=progress,
            batch_loss_fn=losses.batch,
            batch_size=losses.batch_size,
            examples=sub,
        )
    else:
        mc = mc_stochastic_risk(post, losses.risk, cfg.draws, plan.mc, progress=progress)
    kl = float(fam.kl(sigma))
    row = {"sigma": post.sigma if isinstance(sigma, dict) else sigma, "kl": kl, "mc_mean_risk": mc.mean}
    row |= {"mc_risk_upper": mc.upper, "m": cfg.draws, "mc_scheme": scheme, "mc_losses": mc.m}
    row |= {"delta_mc": plan.mc, "delta_bound": plan.bound}
    for name in BOUNDS:
        row[name] = float(pac_bayes_bound(name, mc.upper, kl, losses.n, plan.bound, C=cfg.catoni_c))
    return row


def sigma_grid_table(
    model: torch.nn.Module,
    losses: Losses,
    cfg: BoundConfig,
    plan: DeltaPlan,
    sigmas: Sequence[float],
    *,
    seed: int = 0,
    options: GridOptions | None = None,
) -> pd.DataFrame:
    """One row per σ: KL (nats), MC stochastic risk (mean and upper bound at δ_MC) and every
    PAC-Bayes bound at δ_bound with the MC upper bound as empirical risk (Catoni's at
    C = ``cfg.catoni_c``). With ``mc_scheme="per_example"`` each example gets m draws of its own
    and the bound rests on n·m losses (``mc_losses``). The posteriors are those of
    ``options.family`` (default: the isotropic Gaussian around ``model``) at each σ of ``sigmas``."""
    opts = options or GridOptions()
    fam = opts.family or isotropic_family(model, cfg.space, list(sigmas), init=opts.init, prior=opts.prior)
    rows = [_evaluate(losses, cfg, plan, s, seed + i, fam, opts.progress) for i, s in enumerate(sigmas)]
    return pd.DataFrame(rows)


def module_families(model: Any) -> list[str]:
    """The module families (q_proj, v_proj, ...) of a model's LoRA layers, sorted."""
    return sorted({module_family(f.name) for f in lora_factors(model)})


def family_sigma_table(
    model: torch.nn.Module,
    losses: Losses,
    cfg: BoundConfig,
    plan: DeltaPlan,
    iso: pd.DataFrame,
    *,
    seed: int = 0,
    options: GridOptions | None = None,
) -> pd.DataFrame:
    """Per-module-family σ by coordinate search, after the isotropic grid ``iso``: from the best
    isotropic multiple, each family in turn tries every multiple of its own RMS while the others
    stay fixed, keeping the best Seeger bound. Returns the K·F rows it evaluated (``sigma_map``
    gives each row's σ per family). Every evaluation and every combination is paid for in the
    ledger (:func:`plan_delta` with ``families``)."""
    opts = options or GridOptions()
    if opts.family is not None:
        raise ValueError("the per-module-family search is defined for the isotropic family only (options.family=None)")
    names = [f.name for f in lora_factors(model)]
    families = module_families(model)
    rms = {f: prior_centre_rms(model, cfg.space, init=opts.init, family=f) for f in families}
    mult = cfg.sigma_multiples
    k = len(iso)
    if plan.settings != k + len(families) * k or plan.priors != k + k ** len(families):
        raise ValueError(f"the delta plan does not pay for a per-module search over {len(families)} families")
    fam_iso = isotropic_family(model, cfg.space, list(iso["sigma"]), init=opts.init, prior=opts.prior)
    tied = iso.index[iso["seeger"] <= iso["seeger"].min() + 1e-12]
    current = dict.fromkeys(families, mult[int(iso.loc[tied, "sigma"].idxmax())])
    rows = []
    for fam in families:
        best = (float("inf"), -current[fam])  # ties go to the larger multiple, as on the isotropic grid
        for c in mult:
            trial = current | {fam: c}
            smap = {n: trial[module_family(n)] * rms[module_family(n)] for n in names}
            row = _evaluate(losses, cfg, plan, smap, seed + k + len(rows), fam_iso, opts.progress)
            rows.append(row | {"sigma_map": {f: trial[f] * rms[f] for f in families}})
            best = min(best, (row["seeger"], -c))
        current[fam] = -best[1]
    return pd.DataFrame(rows)


def choose_sigma(table: pd.DataFrame, cfg: BoundConfig, point_risk: float) -> tuple[int, str]:
    """Row index of the chosen σ and the rule, stated in words."""
    if cfg.sigma_rule == "best_bound":
        # Ties (e.g. every point saturated at the top of the loss range) go to the largest σ: the
        # smallest KL, rather than whichever point floating-point noise puts first.
        best = table["seeger"].min()
        tied = table.index[table["seeger"] <= best + 1e-12]
        return int(table.loc[tied, "sigma"].idxmax()), "smallest Seeger bound on the grid (ties: largest sigma)"
    ok = table.index[table["mc_mean_risk"] <= point_risk + cfg.sharpness_tol]
    best = int(table.loc[ok, "sigma"].idxmax()) if len(ok) else int(table["sigma"].idxmin())
    return best, f"sharpness: largest sigma with sampled risk <= point risk + {cfg.sharpness_tol}"


def certificate_core(
    model: torch.nn.Module,
    losses: Losses,
    tv: TVTerm,
    cfg: BoundConfig,
    plan: DeltaPlan,
    *,
    seed: int = 0,
    options: GridOptions | None = None,
    prior_info: dict | None = None,
) -> Certificate:
    """Every term of the two-gap bound for ``model`` (the posterior mean) from its losses and a TV
    term, the σ grid evaluated with ``options`` (:class:`GridOptions`).

    With ``options.prior`` (a data-dependent prior) ``losses`` must cover only examples that
    adapter never saw, and ``prior_info`` says so in the certificate. With ``options.family``
    (e.g. a random subspace, with its own σ grid) ``plan`` must pay for exactly that grid; without
    it, the family is the isotropic Gaussian around ``model`` on the grid of ``cfg`` (:func:`family_for`)."""
    opts = options or GridOptions()
    family, rms = family_for(model, cfg, opts)
    if opts.family is not None and (cfg.per_module_sigma or plan.settings != len(family.grid)):
        raise ValueError("a posterior family needs a plan over exactly its grid, without per_module_sigma")
    point = losses.point(model)
    grid = list(family.grid)
    rows = [_evaluate(losses, cfg, plan, s, seed + i, family, opts.progress) for i, s in enumerate(grid)]
    table = pd.DataFrame(rows)
    if cfg.per_module_sigma:
        fam = family_sigma_table(model, losses, cfg, plan, table, seed=seed, options=opts)
        table = pd.concat([table.assign(sigma_map=None), fam], ignore_index=True)
    row, sigma = _chosen(table, cfg, point, grid, rms)
    upper, kl = float(row["mc_risk_upper"]), float(row["kl"])
    tg = two_gap_bound(upper, kl, losses.n, tv.estimate, delta=plan.bound, method="seeger", tv_certified=tv.certified)
    risk = EmpiricalRisk(
        point, float(row["mc_mean_risk"]), upper, cfg.draws, str(row["mc_scheme"]), int(row["mc_losses"])
    )
    return Certificate(
        n=losses.n,
        loss=cfg.loss,
        loss_range=(0.0, 1.0),
        empirical_risk=risk,
        kl=KLTerm(kl, family.space),
        sigma=sigma,
        delta=DeltaSplit(cfg.delta, plan.ledger.to_dict(), plan.bound, plan.mc, plan.tv),
        g_gen=GenGap(tg.g_gen, float(row["maurer"]) - upper),
        tv=tv,
        two_gap=tg,
        grid=table.to_dict(orient="records"),
        seed=seed,
        versions=library_versions(("torch", "transformers", "peft", "scikit-learn")),
        prior=prior_info or _default_prior(cfg.space),
    )


def _chosen(
    table: pd.DataFrame, cfg: BoundConfig, point: float, grid: list[float], rms: float | None
) -> tuple[pd.Series, SigmaChoice]:
    """The chosen grid row (:func:`choose_sigma`) and the σ choice as the certificate states it."""
    best, rule = choose_sigma(table, cfg, point)
    row = table.iloc[best]
    if cfg.per_module_sigma:
        rule += f"; per-module-family sigma by coordinate search ({len(table)} settings evaluated)"
    interior = len(grid) == 1 or min(grid) < float(row["sigma"]) < max(grid)
    if not interior:
        rule += "; the minimum is at an end of the grid (a wider grid may do better)"
    return row, SigmaChoice(float(row["sigma"]), rule, list(grid), interior, rms, _per_family(row))


def _per_family(row) -> dict | None:
    value = row.get("sigma_map") if hasattr(row, "get") else None
    return dict(value) if isinstance(value, dict) else None


def _default_prior(space: str) -> dict:
    centre = "the pretrained weights" if space == "delta" else "the adapter's initial factors (the pretrained function)"
    return {"kind": "data-free", "centre": centre}
