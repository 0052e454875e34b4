"""One registry of label-free estimators: each is an :class:`EstimatorSpec` saying what it reads,
whose risk it estimates and how it computes it.

Every other part of the package reads :data:`ESTIMATORS` — :func:`label_free_estimates`, the
collector of inputs and ``estimate_test_risk`` (:mod:`pacbayes_sft.certify.label_free`), a sweep
cell's estimates (:mod:`pacbayes_sft.sweep.label_free`), the report's label-free table and the
``estimate-risk`` choices — so a new estimator is one :func:`register_estimator` call::

    register_estimator(EstimatorSpec(
        name="my_estimator", needs={"source_correct", "target_conf"}, risk_of="adapter",
        fn=lambda inputs, settings: ..., help="what it assumes"))

``fn(inputs, settings)`` gets the :class:`LabelFreeInputs` (every field in ``needs`` is set) and
the :class:`EstimatorSettings`, and returns a
:class:`~pacbayes_sft.bounds.domain_adaptation.LabelFreeEstimate` of an answer error in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from ... import defaults
from ...bounds.domain_adaptation import (
    LabelFreeEstimate,
    PosteriorDraws,
    as_binary,
    disagreement_form_2013,
    half_disagreement_lower,
    joint_error_form_2016,
    proportion_interval,
)
from ...config import option
from ...registry import pop_registered
from .methods import ATC, DoC, bootstrap_options, seed_disagreement
from .reweighted import iw_estimate, iw_slices_estimate

__all__ = [
    "ESTIMATORS",
    "RISKS",
    "EstimatorSettings",
    "EstimatorSpec",
    "LabelFreeInputs",
    "inputs_needed",
    "label_free_estimates",
    "register_estimator",
    "unregister_estimator",
]


@dataclass(frozen=True)
class LabelFreeInputs:
    """Every per-item input a label-free estimator may read (what a sweep cell can store).

    - ``target_conf``, ``target_answers``: the adapter's confidence p(whole continuation | prompt)
      and final answer per test prompt; ``target_answer_conf``, ``source_answer_conf``: the
      probability of the final answer's tokens given the prompt and the chain (0 without an answer);
    - ``source_conf``, ``source_correct``, ``source_answers``: the same, with 0/1 correctness, on
      each labelled source item (training-distribution problems it did not train on);
    - ``source_draws``: k posterior draws' answers and correctness per source item;
    - ``target_draws``: k posterior draws' answers per test prompt;
    - ``seed_answers``: the answers of k independently trained adapters (runs × test prompts);
    - ``tv``: (estimate, lower confidence bound at δ/2 or less) of the classifier TV between the
      source and the test prompts (a sweep cell's ``tv``, ``tv_lower`` qualify: δ_TV = 0.2 δ);
    - ``target_prompts``, ``source_prompts``, ``source_slices``: the prompt texts of both sides and
      each source item's slice (difficulty bin);
    - ``pool_prompts``, ``pool_slices``, ``pool_correct``: a labelled *pool* that spans every
      difficulty (not only the training distribution): its prompts, each item's slice and the
      adapter's 0/1 correctness on it, for the estimators that reweight the pool to the test prompts.
    """

    target_conf: Sequence[float] | None = None
    source_conf: Sequence[float] | None = None
    source_correct: Sequence[int] | None = None
    source_draws: PosteriorDraws | None = None
    target_draws: PosteriorDraws | None = None
    seed_answers: Sequence[Sequence[Any]] | None = None
    tv: tuple[float, float] | None = None
    target_answers: Sequence[Any] | None = None
    source_answers: Sequence[Any] | None = None
    target_prompts: Sequence[str] | None = None
    source_prompts: Sequence[str] | None = None
    source_slices: Sequence[Any] | None = None
    pool_prompts: Sequence[str] | None = None
    pool_slices: Sequence[Any] | None = None
    pool_correct: Sequence[int] | None = None
    target_answer_conf: Sequence[float] | None = None
    source_answer_conf: Sequence[float] | None = None

    def given(self) -> set[str]:
        """The names of the inputs that are set."""
        return {f.name for f in fields(self) if getattr(self, f.name) is not None}


INPUT_NAMES = tuple(f.name for f in fields(LabelFreeInputs))
"""Every name an :attr:`EstimatorSpec.needs` may hold."""

RISKS: Mapping[str, str] = MappingProxyType(
    {
        "adapter": "the adapter's answer error (the point model: the posterior mean)",
        "posterior": "the stochastic model's answer error (a fresh posterior draw per item: the Gibbs risk)",
        "seeds": "one seed's adapter's answer error (the seeds' runs as the population)",
    }
)
"""Whose risk an estimator estimates (:attr:`EstimatorSpec.risk_of`)."""


def _check_unit(value: Any, name: str) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def _check_count(value: Any, name: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class EstimatorSettings:
    """The settings every estimator reads (extended by
    :class:`~pacbayes_sft.certify.label_free_config.LabelFreeConfig` with what collecting needs)."""

    delta: float = option(defaults.DELTA, "Each estimate's interval is at level 1 - delta (rows not simultaneous).")
    beta: float = option(1.0, "da_2016: the assumed bound on the density-ratio moment beta_q (> 0).")
    q: float = option(math.inf, "da_2016: the moment's order q > 1 (inf: the supremum of the density ratio).")
    n_boot: int = option(defaults.LABEL_FREE_N_BOOT, "Bootstrap resamples of the ATC, DoC and disagreement intervals.")
    seed: int = option(0, "Seed of the bootstrap (and, when collecting, of the posterior draws and TV folds).")

    def __post_init__(self) -> None:
        _check_unit(self.delta, "delta")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if not (isinstance(self.q, (int, float)) and not isinstance(self.q, bool) and self.q > 1):
            raise ValueError(f"q must be > 1 (math.inf for the supremum of the density ratio), got {self.q!r}")
        _check_count(self.n_boot, "n_boot", 2)
        _check_count(self.seed, "seed", 0)

    @property
    def level(self) -> float:
        return 1.0 - self.delta


Estimate = Callable[[LabelFreeInputs, EstimatorSettings], LabelFreeEstimate]


@dataclass(frozen=True)
class EstimatorSpec:
    """One label-free estimator of a test risk.

    - ``name``: its row name (an identifier);
    - ``needs``: the :class:`LabelFreeInputs` fields it reads (it runs when all are given);
    - ``risk_of``: whose risk it estimates, a key of :data:`RISKS`;
    - ``fn(inputs, settings)``: the estimate, an answer error in [0, 1] with its interval;
    - ``help``: one line for ``estimate-risk --help`` and the docs;
    - ``shift_total``: whether the report adds the two-gap total U_MC + G_gen + max(0, estimate −
      source error) as ``total:<name>`` (False for the rows that are the source error or a bound).
    """

    name: str
    needs: frozenset[str]
    risk_of: str
    fn: Estimate
    help: str
    shift_total: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"name must be an identifier string, got {self.name!r}")
        if isinstance(self.needs, str) or not isinstance(self.needs, Collection) or not self.needs:
            raise ValueError(f"needs must be a non-empty set of input names ({', '.join(INPUT_NAMES)})")
        unknown = sorted(set(self.needs) - set(INPUT_NAMES))
        if unknown:
            raise ValueError(f"needs: unknown inputs {unknown} (known: {', '.join(INPUT_NAMES)})")
        object.__setattr__(self, "needs", frozenset(self.needs))
        if self.risk_of not in RISKS:
            raise ValueError(f"risk_of must be one of {tuple(RISKS)}, got {self.risk_of!r}")
        if not callable(self.fn):
            raise ValueError(f"fn must be a callable (inputs, settings) -> LabelFreeEstimate, got {self.fn!r}")
        if not (isinstance(self.help, str) and self.help.strip()):
            raise ValueError("help must be a non-empty string")


_REGISTRY: dict[str, EstimatorSpec] = {}
ESTIMATORS: Mapping[str, EstimatorSpec] = MappingProxyType(_REGISTRY)
"""Every registered estimator by name, in registration order (read-only: use :func:`register_estimator`)."""


def register_estimator(spec: EstimatorSpec, *, replace: bool = False) -> EstimatorSpec:
    """Add ``spec`` to :data:`ESTIMATORS` (ValueError when the name is taken, unless ``replace``)."""
    if not isinstance(spec, EstimatorSpec):
        raise ValueError(f"spec must be an EstimatorSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"spec: an estimator named {spec.name!r} is already registered (pass replace=True)")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_estimator(name: str) -> EstimatorSpec:
    """Remove and return the estimator ``name`` (ValueError when none is registered under it)."""
    return pop_registered(_REGISTRY, name, built_in=(), kind="estimator")


def check_names(names: Sequence[str], arg: str = "names") -> list[str]:
    """``names`` as a list of registered estimator names; ValueError naming ``arg`` otherwise."""
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"{arg} must be a list of estimator names, got {names!r}")
    for n in names:
        if n not in _REGISTRY:
            raise ValueError(f"{arg}: unknown estimator {n!r} (known: {', '.join(_REGISTRY)})")
    return list(names)


def inputs_needed(names: Sequence[str]) -> set[str]:
    """The union of the inputs the estimators ``names`` read."""
    return {k for n in check_names(names) for k in _REGISTRY[n].needs}


def label_free_estimates(
    inputs: LabelFreeInputs, settings: EstimatorSettings | None = None, *, names: Sequence[str] | None = None
) -> list[LabelFreeEstimate]:
    """The estimators ``names`` (default: every registered one whose inputs are given) on
    ``inputs``, each with its own interval at 1 − δ (not simultaneous across rows)."""
    if not isinstance(inputs, LabelFreeInputs):
        raise ValueError(f"inputs must be a LabelFreeInputs, got {type(inputs).__name__}")
    settings = settings if settings is not None else EstimatorSettings()
    if not isinstance(settings, EstimatorSettings):
        raise ValueError(f"settings must be an EstimatorSettings (or a LabelFreeConfig), got {type(settings).__name__}")
    have = inputs.given()
    if names is None:
        names = [n for n, spec in _REGISTRY.items() if spec.needs <= have]
    for n in check_names(names):
        missing = sorted(_REGISTRY[n].needs - have)
        if missing:
            raise ValueError(f"names: estimator {n!r} needs {', '.join(missing)}")
    return [_REGISTRY[n].fn(inputs, settings) for n in names]


# --- the built-in estimators --------------------------------------------------------------------


def _no_shift(inputs: LabelFreeInputs, s: EstimatorSettings) -> LabelFreeEstimate:
    """The source error as the test error, Clopper–Pearson at δ."""
    wrong = 1 - as_binary(inputs.source_correct, "source_correct")
    r, lo, hi = proportion_interval(wrong, s.delta, "source error")
    return LabelFreeEstimate(
        name="no_shift",
        estimate=r,
        lower=lo,
        upper=hi,
        level=s.level,
        certified=False,
        assumptions="the test prompts come from the training distribution (no shift); Clopper–Pearson "
        "on the source error",
        details={"n_source": float(wrong.size)},
    )


def _two_gap_tv(inputs: LabelFreeInputs, s: EstimatorSettings) -> LabelFreeEstimate:
    """R_S + TV: source error (Clopper–Pearson at δ/2) plus the classifier TV proxy."""
    wrong = 1 - as_binary(inputs.source_correct, "source_correct")
    tv, tv_lo = (float(x) for x in inputs.tv)
    if not (0.0 <= tv_lo <= 1.0 and 0.0 <= tv <= 1.0):
        raise ValueError(f"tv must be (estimate, lower) in [0, 1], got {inputs.tv!r}")
    r, lo, hi = proportion_interval(wrong, s.delta / 2, "source error")
    return LabelFreeEstimate(
        name="two_gap_tv",
        estimate=min(1.0, r + tv),
        lower=min(1.0, lo + tv_lo),
        upper=min(1.0, hi + tv),
        level=s.level,
        certified=False,
        assumptions="R_S + TV (the paper's G_ext, loss in [0, 1]): a bound only with the true TV, but TV is a "
        "classifier proxy with no upper confidence bound; interval [R_S lower + TV lower, R_S upper + TV "
        "estimate], δ/2 on R_S and at most δ/2 on the TV lower bound",
        details={"source_error": r, "tv": tv, "tv_lower": tv_lo, "n_source": float(wrong.size)},
    )


_SOURCE_FIT = frozenset({"source_conf", "source_correct", "target_conf"})
_DRAWS = frozenset({"source_draws", "target_draws"})
_POOL = frozenset({"pool_prompts", "pool_correct", "target_prompts"})
_ANSWER_FIT = frozenset({"source_answer_conf", "source_correct", "target_answer_conf"})


def _on_answer_conf(method: type, name: str):
    """ATC or DoC fitted on the answer confidence instead of the whole continuation's."""

    def fn(i: LabelFreeInputs, s: EstimatorSettings) -> LabelFreeEstimate:
        est = method(**bootstrap_options(s)).fit(i.source_answer_conf, i.source_correct).predict(i.target_answer_conf)
        text = est.assumptions + "; confidence = p(final answer tokens | prompt, chain), not of the whole continuation"
        return replace(est, name=name, assumptions=text)

    return fn

for _spec in (
    EstimatorSpec("no_shift", {"source_correct"}, "adapter", _no_shift,
                  "the source error as the test error (no shift)", shift_total=False),
    EstimatorSpec("two_gap_tv", {"source_correct", "tv"}, "adapter", _two_gap_tv,
                  "source error + the classifier TV proxy (the paper's G_ext)", shift_total=False),
    EstimatorSpec("atc", _SOURCE_FIT, "adapter",
                  lambda i, s: ATC(**bootstrap_options(s)).fit(i.source_conf, i.source_correct).predict(i.target_conf),
                  "average thresholded confidence (Garg et al. 2022)"),
    EstimatorSpec("doc", _SOURCE_FIT, "adapter",
                  lambda i, s: DoC(**bootstrap_options(s)).fit(i.source_conf, i.source_correct).predict(i.target_conf),
                  "difference of confidences (Guillory et al. 2021)"),
    EstimatorSpec("atc_answer", _ANSWER_FIT, "adapter", _on_answer_conf(ATC, "atc_answer"),
                  "ATC on the final answer's confidence (not the whole chain's)"),
    EstimatorSpec("doc_answer", _ANSWER_FIT, "adapter", _on_answer_conf(DoC, "doc_answer"),
                  "DoC on the final answer's confidence (not the whole chain's)"),
    EstimatorSpec("da_2013", _DRAWS, "posterior",
                  lambda i, s: disagreement_form_2013(i.source_draws, i.target_draws, delta=s.delta),
                  "PAC-Bayes domain adaptation, disagreement form (Germain et al. 2013)"),
    EstimatorSpec("da_2016", _DRAWS, "posterior",
                  lambda i, s: joint_error_form_2016(i.source_draws, i.target_draws, beta=s.beta, q=s.q, delta=s.delta),
                  "PAC-Bayes domain adaptation, joint-error form with density-ratio moment beta_q (Germain et al. 2016)"),
    EstimatorSpec("half_disagreement", {"target_draws"}, "posterior",
                  lambda i, s: half_disagreement_lower(i.target_draws, delta=s.delta),
                  "certified lower bound: half the disagreement of two posterior draws", shift_total=False),
    EstimatorSpec("gde_posterior", {"target_draws"}, "posterior",
                  lambda i, s: seed_disagreement(i.target_draws.answers, name="gde_posterior", **bootstrap_options(s)),
                  "disagreement of posterior draws as the error (GDE)"),
    EstimatorSpec("seed_disagreement", {"seed_answers"}, "seeds",
                  lambda i, s: seed_disagreement(i.seed_answers, **bootstrap_options(s)),
                  "disagreement of independently trained seeds (Jiang et al. 2022)"),
    EstimatorSpec("iw_slices", _POOL | {"pool_slices"}, "adapter", iw_slices_estimate,
                  "a labelled pool's per-slice errors weighted by the target's slice shares (black-box shift "
                  "estimation; Mandoline-style)"),
    EstimatorSpec("iw", _POOL, "adapter", iw_estimate,
                  "a labelled pool's errors weighted by a calibrated pool-vs-target density ratio "
                  "(importance-weighted evaluation)"),
):  # fmt: skip
    register_estimator(_spec)
