"""Label-free estimates of a model's test error from its answers and confidences on test prompts.

Inputs are per-item arrays (numpy only, no model): a labelled *source* sample from the training
distribution (problems the model did not train on) gives confidences c_i ∈ [0, 1] and correctness
y_i ∈ {0, 1}; the *target* (test) sample gives confidences or final answers only. None of these is
a bound: each is exact under an assumption about the shift that labels alone could check.

- :func:`seed_disagreement` (Jiang, Nagarajan, Baek & Kolter, ICLR 2022, "Assessing generalization
  of SGD via disagreement"): test error ≈ Dis = P_T[h(x) ≠ h'(x)] for two independently trained
  runs h, h'. The Generalization Disagreement Equality E[err] = E[Dis] holds when the runs'
  ensemble is class-wise calibrated on T: P(y = k | h̃_k(x) = p) = p, h̃_k(x) = P_runs[h(x) = k].
  With k runs, Dis is averaged over the k(k−1)/2 pairs.
- :class:`ATC` (Garg et al., ICLR 2022, average thresholded confidence): fit t on the source so that
  P̂_S[c < t] = ε̂_S, predict ε̂_T = P̂_T[c < t]. Exact when the shift leaves the errors' position
  in the confidence order unchanged (e.g. correct ⇔ c ≥ τ on both sides).
- :class:`DoC` (Guillory et al., ICCV 2021, difference of confidences):
  ε̂_T = ε̂_S + (mean_S c − mean_T c). Unbiased when c is calibrated on both sides
  (E[y | c] = c), since then ε = 1 − E c on each.

Intervals are percentile bootstraps at ``level`` (seeded), over items for the seed disagreement
and over source and target items independently for ATC and DoC; they describe sampling noise
only, never the assumption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from ..bounds.domain_adaptation import (
    LabelFreeEstimate,
    PosteriorDraws,
    as_binary,
    disagreement_form_2013,
    half_disagreement_lower,
    joint_error_form_2016,
    per_item_disagreement,
    proportion_interval,
)

__all__ = [
    "ATC",
    "ESTIMATORS",
    "DoC",
    "LabelFreeEstimate",
    "LabelFreeInputs",
    "label_free_estimates",
    "seed_disagreement",
]

_CHUNK = 128  # bootstrap resamples drawn at a time (memory: chunk × n values)


def _unit_array(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers in [0, 1], got {values!r}") from exc
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all() or ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers in [0, 1]")
    return arr


def _check_settings(level: float, n_boot: int, random_state: int) -> None:
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not isinstance(random_state, int) or isinstance(random_state, bool) or random_state < 0:
        raise ValueError(f"random_state must be an integer >= 0, got {random_state!r}")


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


def seed_disagreement(
    answers: Sequence[Sequence[Any]],
    *,
    level: float = 1.0 - defaults.DELTA,
    n_boot: int = 1000,
    random_state: int = 0,
    name: str = "seed_disagreement",
) -> LabelFreeEstimate:
    """Mean pairwise disagreement of k ≥ 2 runs on the test prompts, as an estimate of a run's error.

    ``answers[j][i]``: run j's final answer on item i (strings or ints; None = no answer). Per item,
    D_i = mean over pairs (j < l) of [answers differ]; the estimate is mean_i D_i (a fraction of
    items), and the interval a percentile bootstrap over items (the runs stay fixed, so it leaves
    out run-to-run variation). Also usable with posterior draws in place of runs.
    """
    _check_settings(level, n_boot, random_state)
    d = per_item_disagreement(PosteriorDraws(answers, name=""))
    rng = np.random.default_rng(random_state)
    boots = np.concatenate(
        [d[rng.integers(0, d.size, (min(_CHUNK, n_boot - s), d.size))].mean(axis=1) for s in range(0, n_boot, _CHUNK)]
    )
    lo, hi = _percentile_interval(boots, level)
    return LabelFreeEstimate(
        name=name,
        estimate=float(d.mean()),
        lower=lo,
        upper=hi,
        level=float(level),
        certified=False,
        assumptions=(
            f"GDE (Jiang et al. 2022): error ≈ disagreement of {len(answers)} independent runs, exact in "
            "expectation when their ensemble is class-wise calibrated on the test prompts (unchecked; "
            "calibration often degrades under shift); bootstrap over items, runs fixed"
        ),
        details={"runs": float(len(answers)), "n_target": float(d.size)},
    )


def atc_threshold(source_conf: np.ndarray, source_wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ATC thresholds of B source samples at once (rows of ``source_conf``/``source_wrong``, shape
    (B, n)): t and a tie weight w ∈ [0, 1) with #{c < t} + w·#{c = t} = k, the number of errors.

    t is the (k+1)-th smallest confidence (t = +∞ when every item is wrong); the weight splits
    the items tied at t so that the fitted fraction equals the source error exactly.
    """
    b, n = source_conf.shape
    k = source_wrong.sum(axis=1)
    ordered = np.sort(source_conf, axis=1)
    t = np.where(k < n, ordered[np.arange(b), np.minimum(k, n - 1)], np.inf)
    below = (source_conf < t[:, None]).sum(axis=1)
    at = (source_conf == t[:, None]).sum(axis=1)
    w = np.where(at > 0, (k - below) / np.maximum(at, 1), 0.0)
    return t, w


def _atc_predict(target_conf: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Predicted error (#{c < t} + w·#{c = t})/n of each row of ``target_conf`` (shape (B, n))."""
    below = (target_conf < t[:, None]).sum(axis=1)
    at = (target_conf == t[:, None]).sum(axis=1)
    return (below + w * at) / target_conf.shape[1]


class _SourceFit:
    """Shared parts of :class:`ATC` and :class:`DoC`: settings, fit on a labelled source sample."""

    def __init__(self, level: float = 1.0 - defaults.DELTA, n_boot: int = 1000, random_state: int = 0) -> None:
        _check_settings(level, n_boot, random_state)
        self.level = float(level)
        self.n_boot = n_boot
        self.random_state = random_state

    def _fit_source(self, source_conf: Any, source_correct: Any) -> None:
        conf = _unit_array(source_conf, "source_conf")
        correct = as_binary(source_correct, "source_correct")
        if correct.size != conf.size:
            raise ValueError(f"source_correct must have one value per source item ({conf.size}), got {correct.size}")
        self.source_conf_, self.source_wrong_ = conf, 1 - correct
        self.source_error_ = float(self.source_wrong_.mean())
        self.n_source_ = conf.size

    def _check_fitted(self) -> None:
        if not hasattr(self, "source_conf_"):
            raise ValueError(f"this {type(self).__name__} is not fitted: call fit(source_conf, source_correct) first")

    def _boot(self, target_conf: np.ndarray, stat) -> np.ndarray:
        """``stat(source_conf, source_wrong, target_conf)`` on B resamples (rows) of both samples."""
        rng = np.random.default_rng(self.random_state)
        ns, nt, out = self.n_source_, target_conf.size, []
        for s in range(0, self.n_boot, _CHUNK):
            b = min(_CHUNK, self.n_boot - s)
            i, j = rng.integers(0, ns, (b, ns)), rng.integers(0, nt, (b, nt))
            out.append(stat(self.source_conf_[i], self.source_wrong_[i], target_conf[j]))
        return np.concatenate(out)


class ATC(_SourceFit):
    """Average thresholded confidence: ``ATC(level).fit(source_conf, source_correct).predict(target_conf)``.

    Fitted: ``threshold_`` t, ``tie_weight_`` w, ``source_error_`` ε̂_S, ``n_source_``. The prediction
    is ε̂_T = (#{c_T < t} + w·#{c_T = t}) / n_T, a fraction of target items; see the module doc.
    """

    def fit(self, source_conf: Any, source_correct: Any) -> ATC:
        """Fit t on the source: P̂_S[c < t] (ties weighted by w) = ε̂_S exactly."""
        self._fit_source(source_conf, source_correct)
        t, w = atc_threshold(self.source_conf_[None, :], self.source_wrong_[None, :])
        self.threshold_, self.tie_weight_ = float(t[0]), float(w[0])
        return self

    def predict(self, target_conf: Any) -> LabelFreeEstimate:
        self._check_fitted()
        conf = _unit_array(target_conf, "target_conf")
        est = float(_atc_predict(conf[None, :], np.array([self.threshold_]), np.array([self.tie_weight_]))[0])

        def stat(sc: np.ndarray, sw: np.ndarray, tc: np.ndarray) -> np.ndarray:
            return _atc_predict(tc, *atc_threshold(sc, sw))

        lo, hi = _percentile_interval(self._boot(conf, stat), self.level)
        return LabelFreeEstimate(
            name="atc",
            estimate=est,
            lower=lo,
            upper=hi,
            level=self.level,
            certified=False,
            assumptions=(
                "ATC (Garg et al. 2022): the fraction of test items below the source-fitted confidence threshold "
                "is their error rate; exact when the shift keeps which confidences are wrong (e.g. correct iff "
                "c ≥ τ on both); bootstrap over source (threshold refitted) and test items"
            ),
            details={
                "threshold": self.threshold_,
                "tie_weight": self.tie_weight_,
                "source_error": self.source_error_,
                "n_source": float(self.n_source_),
                "n_target": float(conf.size),
            },
        )


class DoC(_SourceFit):
    """Difference of confidences: ``DoC(level).fit(source_conf, source_correct).predict(target_conf)``.

    Fitted: ``source_error_`` ε̂_S, ``source_mean_conf_``, ``n_source_``. The prediction is
    ε̂_T = ε̂_S + (mean_S c − mean_T c), clipped to [0, 1] (an error rate).
    """

    def fit(self, source_conf: Any, source_correct: Any) -> DoC:
        self._fit_source(source_conf, source_correct)
        self.source_mean_conf_ = float(self.source_conf_.mean())
        return self

    def predict(self, target_conf: Any) -> LabelFreeEstimate:
        self._check_fitted()
        conf = _unit_array(target_conf, "target_conf")
        est = self.source_error_ + self.source_mean_conf_ - float(conf.mean())

        def stat(sc: np.ndarray, sw: np.ndarray, tc: np.ndarray) -> np.ndarray:
            return sw.mean(axis=1) + sc.mean(axis=1) - tc.mean(axis=1)

        lo, hi = _percentile_interval(self._boot(conf, stat), self.level)
        clip = lambda x: float(min(max(x, 0.0), 1.0))  # noqa: E731
        return LabelFreeEstimate(
            name="doc",
            estimate=clip(est),
            lower=clip(lo),
            upper=clip(hi),
            level=self.level,
            certified=False,
            assumptions=(
                "DoC (Guillory et al. 2021): the drop in mean confidence from source to test equals the rise in "
                "error; unbiased when the confidence is calibrated on both (E[correct | c] = c); "
                "bootstrap over source and test items"
            ),
            details={
                "source_error": self.source_error_,
                "source_mean_conf": self.source_mean_conf_,
                "target_mean_conf": float(conf.mean()),
                "n_source": float(self.n_source_),
                "n_target": float(conf.size),
            },
        )


@dataclass(frozen=True)
class LabelFreeInputs:
    """Every per-item array the label-free estimators read (what a sweep cell can store).

    - ``target_conf``: the adapter's confidence on each test prompt;
    - ``source_conf``, ``source_correct``: its confidence and 0/1 correctness on each labelled
      source item (training-distribution problems it did not train on);
    - ``source_draws``: k posterior draws' answers and correctness per source item;
    - ``target_draws``: k posterior draws' answers per test prompt;
    - ``seed_answers``: the answers of k independently trained adapters (runs × test prompts);
    - ``tv``: (estimate, lower confidence bound at δ/2 or less) of the classifier TV between the
      source and the test prompts (a sweep cell's ``tv``, ``tv_lower`` qualify: δ_TV = 0.2 δ).
    """

    target_conf: Sequence[float] | None = None
    source_conf: Sequence[float] | None = None
    source_correct: Sequence[int] | None = None
    source_draws: PosteriorDraws | None = None
    target_draws: PosteriorDraws | None = None
    seed_answers: Sequence[Sequence[Any]] | None = None
    tv: tuple[float, float] | None = None


ESTIMATORS: dict[str, tuple[str, ...]] = {
    "no_shift": ("source_correct",),
    "two_gap_tv": ("source_correct", "tv"),
    "atc": ("source_conf", "source_correct", "target_conf"),
    "doc": ("source_conf", "source_correct", "target_conf"),
    "da_2013": ("source_draws", "target_draws"),
    "da_2016": ("source_draws", "target_draws"),
    "half_disagreement": ("target_draws",),
    "gde_posterior": ("target_draws",),
    "seed_disagreement": ("seed_answers",),
}
"""Every estimator :func:`label_free_estimates` knows, and the inputs it needs."""


def _source_rows(inputs: LabelFreeInputs, delta: float) -> dict[str, LabelFreeEstimate]:
    """The rows "no_shift" (the source error as the test error) and "two_gap_tv" (source error + TV)."""
    wrong = 1 - as_binary(inputs.source_correct, "source_correct")
    r, lo, hi = proportion_interval(wrong, delta, "source error")
    rows = {
        "no_shift": LabelFreeEstimate(
            name="no_shift",
            estimate=r,
            lower=lo,
            upper=hi,
            level=1.0 - delta,
            certified=False,
            assumptions="the test prompts come from the training distribution (no shift); Clopper–Pearson "
            "on the source error",
            details={"n_source": float(wrong.size)},
        )
    }
    if inputs.tv is not None:
        tv, tv_lo = (float(x) for x in inputs.tv)
        if not (0.0 <= tv_lo <= 1.0 and 0.0 <= tv <= 1.0):
            raise ValueError(f"tv must be (estimate, lower) in [0, 1], got {inputs.tv!r}")
        r, lo, hi = proportion_interval(wrong, delta / 2, "source error")
        rows["two_gap_tv"] = LabelFreeEstimate(
            name="two_gap_tv",
            estimate=min(1.0, r + tv),
            lower=min(1.0, lo + tv_lo),
            upper=min(1.0, hi + tv),
            level=1.0 - delta,
            certified=False,
            assumptions="R_S + TV (the paper's G_ext, loss in [0, 1]): a bound only with the true TV, but TV is a "
            "classifier proxy with no upper confidence bound; interval [R_S lower + TV lower, R_S upper + TV "
            "estimate], δ/2 on R_S and at most δ/2 on the TV lower bound",
            details={"source_error": r, "tv": tv, "tv_lower": tv_lo, "n_source": float(wrong.size)},
        )
    return rows


def label_free_estimates(
    inputs: LabelFreeInputs,
    *,
    names: Sequence[str] | None = None,
    delta: float = defaults.DELTA,
    beta: float = 1.0,
    q: float = math.inf,
    n_boot: int = 1000,
    random_state: int = 0,
) -> list[LabelFreeEstimate]:
    """The estimators ``names`` (default: every one of :data:`ESTIMATORS` whose inputs are given)
    on ``inputs``, each with its own interval at 1 − δ (not simultaneous across rows)."""
    if not isinstance(inputs, LabelFreeInputs):
        raise ValueError(f"inputs must be a LabelFreeInputs, got {type(inputs).__name__}")
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if isinstance(names, str):
        raise ValueError(f"names must be a list of estimator names, got the string {names!r}")
    have = {k for k in LabelFreeInputs.__dataclass_fields__ if getattr(inputs, k) is not None}
    if names is None:
        names = [n for n, need in ESTIMATORS.items() if set(need) <= have]
    for n in names:
        if n not in ESTIMATORS:
            raise ValueError(f"names: unknown estimator {n!r} (known: {', '.join(ESTIMATORS)})")
        missing = [k for k in ESTIMATORS[n] if k not in have]
        if missing:
            raise ValueError(f"names: estimator {n!r} needs {', '.join(missing)}")
    level = 1.0 - delta
    boot = {"level": level, "n_boot": n_boot, "random_state": random_state}
    src = (
        _source_rows(inputs, delta)
        if inputs.source_correct is not None and set(names) & {"no_shift", "two_gap_tv"}
        else {}
    )
    make = {
        "no_shift": lambda: src["no_shift"],
        "two_gap_tv": lambda: src["two_gap_tv"],
        "atc": lambda: ATC(**boot).fit(inputs.source_conf, inputs.source_correct).predict(inputs.target_conf),
        "doc": lambda: DoC(**boot).fit(inputs.source_conf, inputs.source_correct).predict(inputs.target_conf),
        "da_2013": lambda: disagreement_form_2013(inputs.source_draws, inputs.target_draws, delta=delta),
        "da_2016": lambda: joint_error_form_2016(inputs.source_draws, inputs.target_draws, beta=beta, q=q, delta=delta),
        "half_disagreement": lambda: half_disagreement_lower(inputs.target_draws, delta=delta),
        "gde_posterior": lambda: seed_disagreement(inputs.target_draws.answers, name="gde_posterior", **boot),
        "seed_disagreement": lambda: seed_disagreement(inputs.seed_answers, **boot),
    }
    return [make[n]() for n in names]
