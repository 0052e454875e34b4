"""The confidence- and agreement-based label-free estimators: ATC, DoC and seed disagreement.

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

from collections.abc import Sequence
from typing import Any

import numpy as np

from ... import defaults
from ...bounds.domain_adaptation import LabelFreeEstimate, PosteriorDraws, as_binary, per_item_disagreement

__all__ = ["ATC", "DoC", "LabelFreeEstimate", "atc_threshold", "bootstrap_options", "seed_disagreement"]

_CHUNK = 128  # bootstrap resamples drawn at a time (memory: chunk × n values)


def bootstrap_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments every estimator here takes from an
    :class:`~pacbayes_sft.estimators.label_free.EstimatorSettings`: level, n_boot, random_state."""
    return {"level": settings.level, "n_boot": settings.n_boot, "random_state": settings.seed}


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
    n_boot: int = defaults.LABEL_FREE_N_BOOT,
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

    def __init__(
        self, level: float = 1.0 - defaults.DELTA, n_boot: int = defaults.LABEL_FREE_N_BOOT, random_state: int = 0
    ) -> None:
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
        errors = int(self.source_wrong_.sum())
        few = "; WARNING, so few that the threshold is ill-determined" if errors <= 3 else ""
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
                f"c ≥ τ on both); bootstrap over source (threshold refitted) and test items; the threshold rests on "
                f"{errors} source error(s){few}"
            ),
            details={
                "source_errors": float(errors),
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
