"""One call from (base, adapter, train set, test set) to every term of Proposition 4.1.

    total = U_MC + G_gen + G_ext,   U_MC ≥ E_π R̂_S (Monte-Carlo upper bound; by default every
                                     training example gets its own posterior draw),
    G_gen = Seeger bound(U_MC, KL, n) − U_MC,   G_ext = (b − a)·TV̂

The failure probability δ is split in a ledger (:func:`plan_delta`): δ_MC for the Monte-Carlo
estimates, δ_TV for the TV lower bound, and the rest for the PAC-Bayes bound, spread over the K
prior scales of a finite σ grid (δ/K each, so choosing σ after seeing the data is paid for).
σ is chosen either as the grid point with the smallest bound, or by a sharpness search: the
largest σ whose sampled training risk exceeds the point risk by at most ``sharpness_tol``.

The pipeline is load → losses → TV → :func:`certificate_core` → :class:`Certificate`. The core
takes a model, its loss functions on the n training examples, and a TV term; it is the one
engine behind ``certify``, the sweep and the adapter demo.

The PAC-Bayes part is certified (given i.i.d. training data and a prior fixed before training:
the pretrained weights). A classifier TV is a proxy — a lower bound on the true TV in
expectation — so a total built on it is an estimate, and the certificate says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..adapters import INIT_FILE
from ..bounds import BOUNDS, MC_SCHEMES, DeltaLedger, finite_grid_delta, pac_bayes_bound, two_gap_bound
from ..config import option
from ..data.loaders import example_field
from ..estimators.classifier_tv import classifier_tv
from ..estimators.lora import lora_kl, prior_centre_rms
from ..estimators.posterior import (
    GaussianPosterior,
    mc_stochastic_risk,
    mc_stochastic_risk_per_example,
    subsample_examples,
)
from ..lm.scoring import generate_texts, teacher_forced_metrics
from ..versions import library_versions
from .certificate import Certificate, DeltaSplit, EmpiricalRisk, GenGap, KLTerm, SigmaChoice, TVTerm

LOSSES = ("token_error", "sequence_error", "answer_error")
DEFAULT_SIGMAS = (1e-3, 3e-3, 1e-2, 3e-2)  # the former absolute default, kept for reference
# Relative grid: σ = multiple × RMS of the prior centre's parameters, log-spaced over two decades.
DEFAULT_SIGMA_MULTIPLES = (0.02, 0.043, 0.093, 0.2, 0.43, 0.93, 2.0)
SIGMA_RULES = ("best_bound", "sharpness")
SPACES = ("delta", "lora")


@dataclass
class BoundConfig:
    """How the certificate is computed: σ grid and rule, parameter space, δ split, MC draws, loss."""

    sigmas: list[float] | None = option(
        None, "Absolute sigma grid; null = the relative grid sigma_multiples x RMS of the prior centre."
    )
    sigma_multiples: list[float] = option(
        help="Relative sigma grid: multiples of the RMS of the parameters the prior is centred at "
        "(each grid point is charged delta_bound/K).",
        factory=lambda: list(DEFAULT_SIGMA_MULTIPLES),
    )
    sigma_rule: str = option("best_bound", "How sigma is chosen from the grid.", choices=SIGMA_RULES)
    sharpness_tol: float = option(0.05, "Sharpness rule: largest sigma with MC risk <= point risk + this.")
    space: str = option(
        "delta", "'delta': prior at the pretrained weights; 'lora': prior at the adapter init.", choices=SPACES
    )
    delta: float = option(0.05, "Total failure probability, split in a ledger.")
    mc_fraction: float = option(0.2, "Fraction of delta for the Monte-Carlo risk bounds.")
    tv_fraction: float = option(0.2, "Fraction of delta for the TV lower bound.")
    m: int | None = option(
        None, "Posterior draws per sigma: per example (default 1) or shared by all examples (default 20)."
    )
    mc_scheme: str = option(
        "per_example",
        "per_example: each training example gets its own draws (n*m independent losses); "
        "shared: m draws each score every example.",
        choices=MC_SCHEMES,
    )
    loss: str = option("token_error", "Bounded loss in [0, 1] for risks and bounds.", choices=LOSSES)
    mc_examples: int | None = option(
        None,
        "per_example scheme: at most this many (example, draw) losses per sigma; when n*m exceeds it, "
        "that many examples are drawn uniformly with replacement, each under its own draw (i.i.d. losses "
        "with mean E_pi R_S: a valid, looser bound at a fraction of the cost). null = all n*m.",
    )
    per_module_sigma: bool = option(
        False,
        "One sigma grid per module family (q_proj, v_proj, ...; relative grid only), chosen by a coordinate "
        "search after the isotropic grid; the union over every combination is paid in the ledger.",
    )

    def __post_init__(self) -> None:
        if self.mc_scheme not in MC_SCHEMES:
            raise ValueError(f"mc_scheme must be one of {MC_SCHEMES}, got {self.mc_scheme!r}")
        if self.m is not None and (not isinstance(self.m, int) or isinstance(self.m, bool) or self.m < 1):
            raise ValueError(f"m must be an integer >= 1, got {self.m!r}")
        if self.mc_examples is not None and (
            not isinstance(self.mc_examples, int) or isinstance(self.mc_examples, bool) or self.mc_examples < 1
        ):
            raise ValueError(f"mc_examples must be an integer >= 1 or null, got {self.mc_examples!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.sigma_rule not in SIGMA_RULES:
            raise ValueError(f"sigma_rule must be 'best_bound' or 'sharpness', got {self.sigma_rule!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be 'delta' or 'lora', got {self.space!r}")
        f_mc, f_tv = self.mc_fraction, self.tv_fraction
        if not (0 < f_mc < 1 and 0 < f_tv < 1 and f_mc + f_tv < 1):
            raise ValueError("mc_fraction and tv_fraction must lie in (0, 1) and sum to less than 1")
        if self.sigmas is not None:
            self.sigmas = _positive_list(self.sigmas, "sigmas")
            if self.per_module_sigma:
                raise ValueError("per_module_sigma needs the relative grid (sigmas: null)")
        self.sigma_multiples = _positive_list(self.sigma_multiples, "sigma_multiples")

    @property
    def grid_size(self) -> int:
        """K, the number of σ grid points (each charged δ/K)."""
        return len(self.sigmas if self.sigmas is not None else self.sigma_multiples)

    def sigma_grid(self, model: Any, init: Any = None) -> tuple[list[float], float | None]:
        """The absolute σ grid and, for a relative grid, the reference RMS it was scaled by."""
        if self.sigmas is not None:
            return list(self.sigmas), None
        rms = prior_centre_rms(model, self.space, init=init)
        return [m * rms for m in self.sigma_multiples], rms

    @property
    def draws(self) -> int:
        """Posterior draws per σ (m, or the scheme's default)."""
        return self.m if self.m is not None else (1 if self.mc_scheme == "per_example" else 20)


def _positive_list(values: Any, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if not out or any(not v > 0 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return out


@dataclass
class TVConfig:
    """The classifier TV proxy between the training sample and the test set."""

    features: str = option(
        "auto",
        "Features of the TV proxy: 'auto' (structure, TF-IDF or both, chosen by inner cross-validation), "
        "'structure', 'tfidf' or 'structure+tfidf'.",
        choices=("auto", "structure", "tfidf", "structure+tfidf"),
    )
    permutations: int = option(1000, "Permutations for the TV p-value.")
    max_per_side: int | None = option(None, "Use at most this many texts per side (null = all).")


# Keyword arguments of the pre-config API, mapped onto the config fields.
_LEGACY = {f.name: ("bound", f.name) for f in dataclasses.fields(BoundConfig)} | {
    "tv_features": ("tv", "features"),
    "tv_permutations": ("tv", "permutations"),
    "tv_max_per_side": ("tv", "max_per_side"),
}


# ---------------------------------------------------------------------------------------------
# δ ledger and losses


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


@dataclass
class Losses:
    """A bounded loss on the n training examples: the mean risk of a model, one example's loss,
    and (optionally) ``batch(model, [i_1, …, i_B])``: the losses of those examples from one batch
    whose row r is example i_r, which lets per-row posterior draws score B examples per pass."""

    n: int
    risk: Callable[[torch.nn.Module], float]
    example: Callable[[torch.nn.Module, int], float]
    batch: Callable[[torch.nn.Module, list[int]], list[float]] | None = None
    batch_size: int = 64


def _losses_from_batch(n: int, batch: Callable, batch_size: int) -> Losses:
    """Losses whose risk and single-example loss both go through ``batch``."""

    def risk(mdl: torch.nn.Module) -> float:
        chunks = [list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)]
        return float(sum(sum(batch(mdl, c)) for c in chunks) / n)

    return Losses(n=n, risk=risk, example=lambda mdl, i: batch(mdl, [i])[0], batch=batch, batch_size=batch_size)


def teacher_forced_losses(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    loss: str,
    *,
    batch_size: int = 64,
    per_row_draws: bool = False,
) -> Losses:
    """Token error or sequence error (1 − teacher-forced exact match), both in [0, 1].
    ``per_row_draws=True`` exposes the batched loss for per-row posterior draws (slower here)."""
    if loss not in ("token_error", "sequence_error"):
        raise ValueError(f"loss must be 'token_error' or 'sequence_error' for teacher forcing, got {loss!r}")

    def batch(mdl: torch.nn.Module, idx: list[int]) -> list[float]:
        ps, rs = [prompts[i] for i in idx], [responses[i] for i in idx]
        tf = teacher_forced_metrics(mdl, tokenizer, ps, rs, batch_size=len(idx), keep_order=True)
        return tf["token_error"] if loss == "token_error" else [1.0 - v for v in tf["exact_match"]]

    # One teacher-forced pass per example is cheap: per-row draws only pay off with generation
    # (benchmarks/bench_mc_draws.py: 0.8x here, 11x for answer_error), so MC stays one at a time.
    losses = _losses_from_batch(len(prompts), batch, batch_size)
    return losses if per_row_draws else dataclasses.replace(losses, batch=None)


def answer_losses(
    tokenizer: Any,
    prompts: Sequence[str],
    correct: Callable[[int, str], bool],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 64,
) -> Losses:
    """answer_error: 1 − [the greedy generation for example i is judged correct], in {0, 1}.

    ``correct(i, text)`` judges example i's generated text (a verifier, or a scorer against the
    reference answer). Under a posterior, each row of a generation batch decodes under its own
    draw (``GaussianPosterior.sample_rows``), so the per-example scheme stays affordable.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")

    def batch(mdl: torch.nn.Module, idx: list[int]) -> list[float]:
        ps = [prompts[i] for i in idx]
        texts = generate_texts(mdl, tokenizer, ps, max_new_tokens=max_new_tokens, batch_size=len(idx), keep_order=True)
        return [0.0 if correct(i, t) else 1.0 for i, t in zip(idx, texts)]

    return _losses_from_batch(len(prompts), batch, batch_size)


def example_losses(
    tokenizer: Any,
    examples: Sequence[Any],
    loss: str,
    *,
    scorer: Any = None,
    max_new_tokens: int = 256,
    batch_size: int = 64,
) -> Losses:
    """The configured loss on ``examples`` (items with prompt, response and, for answer_error
    with a scorer, answer). ``scorer`` for answer_error: ``(example, text) -> bool`` (a verifier),
    or a name / import path of :mod:`pacbayes_sft.data.scorers` compared with each example's
    ``answer`` (default ``final_answer``)."""
    prompts, responses = _texts(examples, "examples")
    if loss != "answer_error":
        return teacher_forced_losses(tokenizer, prompts, responses, loss, batch_size=batch_size)
    if callable(scorer):
        correct = lambda i, text: bool(scorer(examples[i], text))  # noqa: E731
    else:
        from ..data.scorers import answer_judge

        judge = answer_judge(scorer or "final_answer")
        try:
            for e in examples:
                example_field(e, "answer")
        except ValueError:
            raise ValueError(
                "loss='answer_error' needs an 'answer' on every example, or a verifier as scorer"
            ) from None
        correct = lambda i, text: judge(examples[i], text)  # noqa: E731
    return answer_losses(
        tokenizer,
        prompts,
        correct,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )


# ---------------------------------------------------------------------------------------------
# The engine


@dataclass
class PosteriorFamily:
    """Posteriors indexed by a scale σ other than the isotropic Gaussian around the adapter (e.g.
    Gaussians in a random subspace): how to sample one, and its KL to the prior, in nats."""

    space: str
    grid: list[float]
    posterior: Callable[[float, int], Any]  # (σ, seed) -> object with .sample(index), .sigma, .space
    kl: Callable[[float], float]


def _mc_examples(cfg: BoundConfig, n: int, seed: int) -> list[int] | None:
    """The subsampled (example per draw) list when n·m exceeds ``mc_examples``, else None (all)."""
    if cfg.mc_examples is None or n * cfg.draws <= cfg.mc_examples:
        return None
    return subsample_examples(n, cfg.mc_examples, seed)


def _evaluate(model, losses: Losses, cfg: BoundConfig, plan: DeltaPlan, sigma, seed: int, **kw) -> dict:
    """One σ setting (a float, or module name → σ): KL, MC risk at δ_MC and every bound at δ_bound."""
    fam = kw.get("family")
    post = fam.posterior(sigma, seed) if fam else GaussianPosterior(model, sigma, cfg.space, seed=seed)
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
            progress=kw["progress"],
            batch_loss_fn=losses.batch,
            batch_size=losses.batch_size,
            examples=sub,
        )
    else:
        mc = mc_stochastic_risk(post, losses.risk, cfg.draws, plan.mc, progress=kw["progress"])
    kl = fam.kl(sigma) if fam else lora_kl(model, sigma, space=cfg.space, init=kw["init"], prior=kw["prior"])
    row = {"sigma": post.sigma if isinstance(sigma, dict) else sigma, "kl": kl, "mc_mean_risk": mc.mean}
    row |= {"mc_risk_upper": mc.upper, "m": cfg.draws, "mc_scheme": scheme, "mc_losses": mc.m}
    row |= {"delta_mc": plan.mc, "delta_bound": plan.bound}
    for name in BOUNDS:
        row[name] = float(pac_bayes_bound(name, mc.upper, kl, losses.n, plan.bound, C=kw["catoni_c"]))
    return row


def sigma_grid_table(
    model: torch.nn.Module,
    losses: Losses,
    cfg: BoundConfig,
    plan: DeltaPlan,
    sigmas: Sequence[float],
    *,
    seed: int = 0,
    init: Any = None,
    catoni_c: float = 1.0,
    progress: bool = False,
    prior: Any = None,
    family: PosteriorFamily | None = None,
) -> pd.DataFrame:
    """One row per σ: KL, MC stochastic risk (mean and upper bound at δ_MC) and every PAC-Bayes
    bound at δ_bound with the MC upper bound as empirical risk. With ``mc_scheme="per_example"``
    each example gets m draws of its own and the bound rests on n·m losses (``mc_losses``)."""
    kw = {"init": init, "prior": prior, "catoni_c": catoni_c, "progress": progress, "family": family}
    return pd.DataFrame([_evaluate(model, losses, cfg, plan, s, seed + i, **kw) for i, s in enumerate(sigmas)])


def family_sigma_table(
    model: torch.nn.Module, losses: Losses, cfg: BoundConfig, plan: DeltaPlan, iso: pd.DataFrame, *, seed: int = 0, **kw
) -> pd.DataFrame:
    """Per-module-family σ by coordinate search, after the isotropic grid ``iso``: from the best
    isotropic multiple, each family in turn tries every multiple of its own RMS while the others
    stay fixed, keeping the best Seeger bound. Returns the K·F rows it evaluated (``sigma_map``
    gives each row's σ per family). Every evaluation and every combination is paid for in the
    ledger (:func:`plan_delta` with ``families``)."""
    from ..adapters import lora_factors
    from ..estimators.lora import module_family, prior_centre_rms

    names = [f.name for f in lora_factors(model)]
    families = module_families(model)
    rms = {f: prior_centre_rms(model, cfg.space, init=kw.get("init"), family=f) for f in families}
    mult = cfg.sigma_multiples
    k = len(iso)
    if plan.settings != k + len(families) * k or plan.priors != k + k ** len(families):
        raise ValueError(f"the delta plan does not pay for a per-module search over {len(families)} families")
    tied = iso.index[iso["seeger"] <= iso["seeger"].min() + 1e-12]
    current = dict.fromkeys(families, mult[int(iso.loc[tied, "sigma"].idxmax())])
    rows = []
    for fam in families:
        best = (float("inf"), -current[fam])  # ties go to the larger multiple, as on the isotropic grid
        for c in mult:
            trial = current | {fam: c}
            smap = {n: trial[module_family(n)] * rms[module_family(n)] for n in names}
            row = _evaluate(model, losses, cfg, plan, smap, seed + k + len(rows), **kw)
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
    init: Any = None,
    progress: bool = False,
    prior: Any = None,
    prior_info: dict | None = None,
    family: PosteriorFamily | None = None,
) -> Certificate:
    """Every term of the two-gap bound for ``model`` (the posterior mean) from its losses and a TV
    term; ``progress`` draws a bar (terminals only) over the posterior draws of each σ.

    ``prior``: an adapter the prior is centred at instead of the pretrained weights (a
    data-dependent prior); ``losses`` must then cover only examples that adapter never saw, and
    ``prior_info`` says so in the certificate. ``family``: another posterior family (e.g. a random
    subspace) with its own σ grid, which ``plan`` must pay for."""
    point = losses.risk(model)
    if family is not None and (cfg.per_module_sigma or plan.settings != len(family.grid)):
        raise ValueError("a posterior family needs a plan over exactly its grid, without per_module_sigma")
    grid, rms = (list(family.grid), None) if family is not None else cfg.sigma_grid(model, init)
    table = sigma_grid_table(
        model, losses, cfg, plan, grid, seed=seed, init=init, progress=progress, prior=prior, family=family
    )
    if cfg.per_module_sigma:
        kw = {"init": init, "prior": prior, "catoni_c": 1.0, "progress": progress}
        fam = family_sigma_table(model, losses, cfg, plan, table, seed=seed, **kw)
        table = pd.concat([table.assign(sigma_map=None), fam], ignore_index=True)
    best, rule = choose_sigma(table, cfg, point)
    row = table.iloc[best]
    if cfg.per_module_sigma:
        rule += f"; per-module-family sigma by coordinate search ({len(table)} settings evaluated)"
    interior = len(grid) == 1 or min(grid) < float(row["sigma"]) < max(grid)
    if not interior:
        rule += "; the minimum is at an end of the grid (a wider grid may do better)"
    upper, kl = float(row["mc_risk_upper"]), float(row["kl"])
    tg = two_gap_bound(upper, kl, losses.n, tv.estimate, delta=plan.bound, method="seeger", tv_certified=tv.certified)
    risk = EmpiricalRisk(
        point, float(row["mc_mean_risk"]), upper, cfg.draws, str(row["mc_scheme"]), int(row["mc_losses"])
    )
    delta = DeltaSplit(cfg.delta, plan.ledger.to_dict(), plan.bound, plan.mc, plan.tv)
    return Certificate(
        n=losses.n,
        loss=cfg.loss,
        loss_range=(0.0, 1.0),
        empirical_risk=risk,
        kl=KLTerm(kl, family.space if family is not None else cfg.space),
        sigma=SigmaChoice(float(row["sigma"]), rule, list(grid), interior, rms, _per_family(row)),
        delta=delta,
        g_gen=GenGap(tg.g_gen, float(row["maurer"]) - upper),
        tv=tv,
        two_gap=tg,
        grid=table.to_dict(orient="records"),
        seed=seed,
        versions=library_versions(("torch", "transformers", "peft", "scikit-learn")),
        prior=prior_info or _default_prior(cfg.space),
    )


def module_families(model) -> list[str]:
    """The module families (q_proj, v_proj, ...) of a model's LoRA layers, sorted."""
    from ..adapters import lora_factors
    from ..estimators.lora import module_family

    return sorted({module_family(f.name) for f in lora_factors(model)})


def _per_family(row) -> dict | None:
    value = row.get("sigma_map") if hasattr(row, "get") else None
    return dict(value) if isinstance(value, dict) else None


def _default_prior(space: str) -> dict:
    centre = "the pretrained weights" if space == "delta" else "the adapter's initial factors (the pretrained function)"
    return {"kind": "data-free", "centre": centre}


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
    delta: float = 0.05,
    seed: int = 0,
) -> StochasticRisk:
    """The stochastic model's risk on the examples behind ``losses`` (e.g. the test set): what the
    bound is a bound on. Every example gets its own posterior draw; the interval is
    [kl⁻¹_lower, kl⁻¹_upper](R̂, ln(4/δ)/N), each side at δ/2."""
    from ..bounds import kl_inverse_lower, kl_inverse_upper

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
    delta: float = 0.05,
    mc_fraction: float = 0.2,
    loss: str = "token_error",
    seed: int = 0,
    prior_info: dict,
) -> Certificate:
    """The certificate of a posterior trained by a PAC-Bayes objective
    (:class:`~pacbayes_sft.training.pacbayes_objective.LearnedGaussianLoRA`): N(μ, s_m²) per
    module over the LoRA factors against the prior N(θ₀, σ_p²), σ_p fixed before training (so no
    grid is paid for: K = 1). ``prior_info`` states where the prior is centred and on which data
    (e.g. ``{"kind": "data-free", "centre": "the adapter's initial factors"}``); ``losses`` must
    cover only examples the centre never saw. The parametrisation is removed; μ stays as the
    adapter's weights."""
    kl = float(posterior.kl().item())
    scales, sp = posterior.module_scales(), posterior.prior_sigma
    posterior.remove()
    family = PosteriorFamily(
        space="lora (learned per-module posterior scales)",
        grid=[sp],
        posterior=lambda _sigma, s: GaussianPosterior(model, scales, "lora", seed=s),
        kl=lambda _sigma: kl,
    )
    cfg = BoundConfig(sigmas=[sp], delta=delta, mc_fraction=mc_fraction, m=1, loss=loss)
    note = f"prior sigma {sp:g} fixed before training, learned per-module posterior scales"
    plan = plan_delta(cfg, losses.n, tv_interval=False, prior_note=note)
    info = dict(prior_info) | {"sigma": sp, "posterior_scales": scales}
    return certificate_core(model, losses, tv, cfg, plan, seed=seed, prior_info=info, family=family)


# ---------------------------------------------------------------------------------------------
# certify(): load → losses → TV → core


def _texts(examples: Sequence[Any], what: str) -> tuple[list[str], list[str]]:
    fields = []
    for name in ("prompt", "response"):
        vals = [example_field(e, name) for e in examples]
        if not all(isinstance(v, str) for v in vals):
            raise ValueError(f"{what} need a string {name!r}")
        fields.append(vals)
    return fields[0], fields[1]


def _load(base: Any, adapter: Any, tokenizer: Any):
    from peft import PeftModel

    from ..data.tokenizer import load_tokenizer
    from ..training.models import load_causal_lm

    if tokenizer is None:
        if not isinstance(base, (str, Path)):
            raise ValueError("tokenizer is required when base is not a checkpoint directory")
        tokenizer = load_tokenizer(base)
    if isinstance(adapter, torch.nn.Module):
        return adapter.eval(), tokenizer
    base_model = load_causal_lm(base) if isinstance(base, (str, Path)) else base
    adir = Path(adapter)
    if not (adir / "adapter_config.json").is_file():
        raise ValueError(f"adapter directory {str(adir)!r} has no adapter_config.json")
    try:
        model = PeftModel.from_pretrained(base_model, str(adir))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"adapter {str(adir)!r} does not fit base model {str(base)!r}: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval(), tokenizer


def capped(texts: Sequence[str], strata: Sequence[Any] | None, cap: int | None, seed: int) -> list[str]:
    """At most ``cap`` texts: a random sample, stratified by ``strata`` (e.g. the op count of each
    example) so that every slice keeps its share. Never the first ``cap`` of a sorted list."""
    texts = list(texts)
    if cap is None or len(texts) <= cap:
        return texts
    rng = np.random.default_rng(seed)
    keys = np.asarray([str(k) for k in strata]) if strata is not None else np.zeros(len(texts), dtype=str)
    chosen: list[int] = []
    groups = [np.flatnonzero(keys == k) for k in np.unique(keys)]
    quotas = _largest_remainder([len(g) * cap / len(texts) for g in groups], cap)
    for g, quota in zip(groups, quotas):
        chosen += rng.choice(g, size=quota, replace=False).tolist()
    return [texts[i] for i in sorted(chosen)]


def _largest_remainder(shares: list[float], total: int) -> list[int]:
    """Integers that sum to ``total``, each the floor of its share plus one for the largest remainders."""
    base = [int(np.floor(x)) for x in shares]
    order = np.argsort([-(x - b) for x, b in zip(shares, base)], kind="stable")
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


def _strata(examples: Sequence[Any]) -> list[Any] | None:
    for key in ("op", "difficulty", "slice"):
        try:
            return [example_field(e, key) for e in examples]
        except (KeyError, AttributeError, ValueError):
            continue
    return None


def classifier_tv_term(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    cfg: TVConfig,
    delta: float,
    seed: int,
    *,
    strata: tuple[Sequence[Any] | None, Sequence[Any] | None] = (None, None),
):
    """The classifier TV proxy between training and test texts, as a (not certified) TV term.
    Each side is capped at ``cfg.max_per_side`` by a stratified random sample (:func:`capped`)."""
    p = capped(train_texts, strata[0], cfg.max_per_side, seed)
    q = capped(test_texts, strata[1], cfg.max_per_side, seed + 1)
    res = classifier_tv(
        p,
        q,
        features=cfg.features,
        delta=delta,
        n_permutations=cfg.permutations,
        random_state=seed,
        n_splits=max(2, min(5, len(p), len(q))),
    )
    return TVTerm.from_result(res)


def _configs(bound: BoundConfig | None, tv: TVConfig | None, legacy: dict) -> tuple[BoundConfig, TVConfig]:
    parts: dict[str, dict] = {"bound": {}, "tv": {}}
    for key, value in legacy.items():
        if key not in _LEGACY:
            raise TypeError(f"certify() got an unexpected keyword argument {key!r}")
        where, name = _LEGACY[key]
        parts[where][name] = value
    b = dataclasses.replace(bound or BoundConfig(), **parts["bound"])
    return b, dataclasses.replace(tv or TVConfig(), **parts["tv"])


def certify(
    base: Any,
    adapter: Any,
    train_examples: Sequence[Any],
    test_examples: Sequence[Any],
    *,
    bound: BoundConfig | None = None,
    tv: TVConfig | None = None,
    tokenizer: Any = None,
    init: Any = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    prior_adapter: Any = None,
    n_prior: int = 0,
    scorer: Any = None,
    max_new_tokens: int = 256,
    **legacy: Any,
) -> Certificate:
    """The two-gap certificate of one adapter.

    Args:
        base: base checkpoint directory (or model object, then pass ``tokenizer``).
        adapter: adapter directory, or a peft model already wrapping the base.
        train_examples, test_examples: items with ``prompt`` and ``response`` (dicts or objects);
            the training examples must be the ones the adapter was trained on (n = their number).
        bound, tv: :class:`BoundConfig` and :class:`TVConfig` (defaults when omitted). Their
            fields may also be given as keywords (``sigmas=``, ``m=``, ``tv_permutations=``, …).
        init: initial adapter factors for space="lora" (default: ``lora_init.safetensors``
            beside an adapter directory).
        prior_adapter, n_prior: a data-dependent prior — an adapter trained on the first
            ``n_prior`` training examples only. The prior is centred at it, and the bound uses
            the remaining n − n_prior examples (the certificate and the ledger say so).

    Returns a :class:`Certificate`; ``two_gap, doc = certify(...)`` still unpacks as before.
    """
    cfg, tv_cfg = _configs(bound, tv, legacy)
    if not train_examples:
        raise ValueError("train_examples must not be empty")
    if not (isinstance(n_prior, int) and 0 <= n_prior < len(train_examples)):
        raise ValueError(f"n_prior must be an integer in [0, {len(train_examples)}), got {n_prior!r}")
    if (prior_adapter is None) != (n_prior == 0):
        raise ValueError(
            "a data-dependent prior needs both prior_adapter and n_prior > 0 (the examples it was trained on)"
        )
    if not test_examples:
        raise ValueError("test_examples must not be empty")
    prompts, responses = _texts(train_examples, "examples")
    test_prompts, test_responses = _texts(test_examples, "examples")
    model, tok = _load(base, adapter, tokenizer)
    # With a data-dependent prior the bound rests only on the examples the prior never saw.
    losses = example_losses(
        tok,
        list(train_examples)[n_prior:],
        cfg.loss,
        scorer=scorer,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    info = None
    if n_prior:
        info = {
            "kind": "data-dependent",
            "centre": str(prior_adapter) if isinstance(prior_adapter, (str, Path)) else "adapter",
            "n_prior": n_prior,
            "n_bound": losses.n,
        }
    note = f"prior: adapter trained on the first {n_prior} examples, bound on the other {losses.n}" if n_prior else ""
    plan = plan_delta(
        cfg, losses.n, prior_note=note, families=len(module_families(model)) if cfg.per_module_sigma else 0
    )
    if init is None and cfg.space == "lora" and isinstance(adapter, (str, Path)):
        init = Path(adapter) / INIT_FILE  # the initial factors saved beside the adapter
    train_texts = [p + " " + r for p, r in zip(prompts, responses)]
    test_texts = [p + " " + r for p, r in zip(test_prompts, test_responses)]
    strata = (_strata(train_examples), _strata(test_examples))
    tv_term = classifier_tv_term(train_texts, test_texts, tv_cfg, plan.tv, seed, strata=strata)
    return certificate_core(
        model, losses, tv_term, cfg, plan, seed=seed, init=init, progress=progress, prior=prior_adapter, prior_info=info
    )
