"""Target risk by reweighting a labelled pool that spans every difficulty.

A user who asks "which training difficulty serves my target best?" holds target prompts without
answers, and a labelled *pool*: held-out examples of every difficulty in the training
distribution, on which each fine-tuned model's per-item error e_i ∈ [0, 1] is measured. The
target risk is the pool's error reweighted to the target:

    R_T = E_{x~T} e(x) = E_{x~P} r(x) e(x),   r = dT/dP   (covariate shift: e(x) the same function)

Two ways to estimate r from the prompts alone, both self-normalised over the pool,

    R̂_T = Σ_i r̂_i e_i / Σ_i r̂_i,

- :class:`DensityRatioWeights` (importance-weighted evaluation, Sugiyama et al. 2007; Cortes,
  Mansour & Mohri 2010): a probabilistic classifier c(x) = P(target | x) on pool ∪ target,
  cross-fitted (each item's probability comes from a model that never saw it) and calibrated
  (Platt scaling inside each fold). r̂(x) = (n_P / n_T)·c(x) / (1 − c(x)).
- :class:`SliceWeights` (Mandoline-style, Chen et al. 2021, with black-box shift estimation,
  Lipton et al. 2018): the pool's difficulty slices s ∈ {1..K} (e.g. operation counts). A
  prompt-to-slice classifier f is cross-fitted on the pool, giving M[i, j] = P_P(f = i | s = j).
  On the target, μ[i] = P_T(f = i) = Σ_j M[i, j] π_j when p(x | s) is the same in pool and
  target (shift of slice shares only), so π̂ = argmin_{π ∈ simplex} ‖M π − μ̂‖² and
  R̂_T = Σ_j π̂_j ē_j with ē_j the pool's mean error in slice j (r̂_i = π̂_{s_i} / p̂_P(s_i)).

With known weights the self-normalised error is consistent (its bias is O(1/n_P)); the slice form
Σ_j π_j ē_j with exact shares is unbiased when every slice has pool items. The deviation of the
unnormalised weighted mean is controlled by the Rényi divergence d₂(T‖P) = E_P r² (Cortes, Mansour
& Mohri 2010). With estimated weights it is an estimate, never a certificate (``certified=False``).

Overlap. Where the target holds prompts unlike any in the pool, no reweighting recovers its risk.
Both estimators report the effective sample size of the pool weights, ESS = (Σ r̂)² / Σ r̂², and
the share of target prompts that the domain classifier puts outside the pool's support: the
class-balanced probability r̂/(1 + r̂) = P(target | x) at equal sample sizes ≥ ``support_threshold``
(so the rule does not move with n_P / n_T). When that share exceeds ``max_outside`` or ESS / n_P
falls below ``min_ess_fraction``, :attr:`overlap_ok_` is False and the estimate says so in its
assumptions. Slice weights also warn when the shift estimate is ill-posed: the target's predicted
slices are not a mixture of the pool's (‖M π̂ − μ̂‖₁ > ``max_residual``), or M is near-singular
(smallest singular value < ``min_singular``).

Intervals are percentile bootstraps at ``level`` (seeded) with the fitted classifiers held fixed:
over pool items for the density ratio (given the fitted weights: the error of the weights
themselves, which dominates, is not in it; an independent review measured 72.5% coverage of the
target risk at a nominal 95% in a small simulation), and over pool and target items independently
for the slice weights (the confusion matrix, the slice errors and μ̂ are all resampled; the slice
classifier is held fixed). Neither covers the shift assumption. The point estimate is reported as
computed, and may fall outside its percentile interval.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.optimize import nnls

from .. import defaults
from ..bounds.domain_adaptation import LabelFreeEstimate
from .features import text_feature_sets

__all__ = ["DensityRatioWeights", "SliceWeights", "effective_sample_size", "simplex_least_squares"]

_CHUNK = 256  # bootstrap resamples drawn at a time
_PROBA_CLIP = 1e-6  # keeps c/(1 − c) finite; items that close to 1 are counted outside the support
MIN_PROMPTS = 10


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (Σ w)² / Σ w² of nonnegative weights (n for equal weights)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be a nonempty 1-d array of finite values >= 0 with a positive sum")
    return float(w.sum() ** 2 / np.square(w).sum())


def simplex_least_squares(matrix: np.ndarray, target: np.ndarray, *, penalty: float = 1e3) -> np.ndarray:
    """argmin_{π ≥ 0, Σπ = 1} ‖M π − μ‖², by nonnegative least squares with the sum constraint as
    a heavily weighted extra row (then renormalised, so Σπ = 1 exactly)."""
    m = np.asarray(matrix, dtype=float)
    mu = np.asarray(target, dtype=float)
    a = np.vstack([m, penalty * np.ones((1, m.shape[1]))])
    b = np.concatenate([mu, [penalty]])
    pi, _ = nnls(a, b)
    total = pi.sum()
    return pi / total if total > 0 else np.full(m.shape[1], 1.0 / m.shape[1])


def _texts(values: Any, name: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a nonempty list of prompts")
    if not all(isinstance(t, str) for t in values):
        raise ValueError(f"{name} must hold strings (prompts)")
    if all(not t.strip() for t in values):
        raise ValueError(f"{name}: every prompt is empty")
    if len(values) < MIN_PROMPTS:  # the cross-fit and its inner calibration need a few items a side
        raise ValueError(f"{name} must hold at least {MIN_PROMPTS} prompts, got {len(values)}")
    return list(values)


def _errors(values: Any, n: int) -> np.ndarray:
    e = np.asarray(values, dtype=float)
    if e.shape != (n,):
        raise ValueError(f"pool_errors must hold one error per pool prompt ({n}), got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e < 0) or np.any(e > 1):
        raise ValueError("pool_errors must lie in [0, 1]")
    return e


def _check_level(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if not (isinstance(n_boot, int) and n_boot >= 2):
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")


def _pipeline(features: Any, texts: list[str], classifier: Any):
    """(rows, pipeline): the feature rows of ``texts`` and an unfitted feature step + classifier."""
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sets = text_feature_sets(texts, [], features)
    if len(sets) != 1:
        raise ValueError(f"features must name one feature set ('structure', 'tfidf', 'structure+tfidf' or a callable), got {features!r}")
    fs = next(iter(sets.values()))
    step = clone(fs.step) if fs.step is not None else StandardScaler()
    return fs.data, make_pipeline(step, classifier)


def _calibrated_logistic(random_state: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    return CalibratedClassifierCV(LogisticRegression(max_iter=2000, random_state=random_state), method="sigmoid", cv=3)


def _cross_fitted_proba(rows, labels: np.ndarray, pipe, n_splits: int, random_state: int) -> np.ndarray:
    """Out-of-fold class probabilities (n × classes): each row scored by a model that never saw it."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = min(n_splits, int(np.bincount(labels).min()))
    if folds < 2:
        raise ValueError("every class needs at least 2 items to cross-fit the classifier")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    return cross_val_predict(pipe, rows, labels, cv=cv, method="predict_proba")


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


class DensityRatioWeights:
    """Pool weights r̂ = dT/dP from a cross-fitted, calibrated pool-vs-target classifier.

    Args:
        features: the TV proxy's feature sets: "structure", "tfidf", "structure+tfidf" or a callable
            mapping texts to a numeric matrix.
        n_splits: folds of the cross-fit (fewer when a side is smaller).
        support_threshold: a target prompt whose class-balanced P(target | x), r̂/(1 + r̂), is at least
            this lies outside the pool's support (0.95: r̂ ≥ 19).
        max_outside: largest share of target prompts outside the support for ``overlap_ok_``.
        min_ess_fraction: smallest ESS / n_pool for ``overlap_ok_``.
        random_state: seed of the folds and the classifier.

    Fitted attributes: ``weights_`` (pool, mean 1), ``target_proba_`` (out-of-fold P(target | x) on
    the target), ``ess_``, ``outside_share_``, ``overlap_ok_``, ``warning_`` ("" when overlap is fine).
    """

    name = "density_ratio"

    def __init__(
        self,
        *,
        features: Any = "structure+tfidf",
        n_splits: int = 5,
        support_threshold: float = 0.95,
        max_outside: float = 0.05,
        min_ess_fraction: float = 0.05,
        random_state: int = 0,
    ) -> None:
        if not (isinstance(n_splits, int) and n_splits >= 2):
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        for key, v in (("support_threshold", support_threshold), ("max_outside", max_outside)):
            if not 0.0 < v < 1.0:
                raise ValueError(f"{key} must lie in (0, 1), got {v!r}")
        if not 0.0 <= min_ess_fraction < 1.0:
            raise ValueError(f"min_ess_fraction must lie in [0, 1), got {min_ess_fraction!r}")
        self.features, self.n_splits = features, n_splits
        self.support_threshold, self.max_outside, self.min_ess_fraction = support_threshold, max_outside, min_ess_fraction
        self.random_state = random_state

    def fit(self, pool_prompts: Sequence[str], target_prompts: Sequence[str]) -> DensityRatioWeights:
        pool, target = _texts(pool_prompts, "pool_prompts"), _texts(target_prompts, "target_prompts")
        labels = np.r_[np.zeros(len(pool), int), np.ones(len(target), int)]
        rows, pipe = _pipeline(self.features, pool + target, _calibrated_logistic(self.random_state))
        c = _cross_fitted_proba(rows, labels, pipe, self.n_splits, self.random_state)[:, 1]
        c = np.clip(c, _PROBA_CLIP, 1.0 - _PROBA_CLIP)
        r = (len(pool) / len(target)) * c[: len(pool)] / (1.0 - c[: len(pool)])
        self.weights_ = r / r.mean()
        self.target_proba_ = c[len(pool) :]
        self.ess_ = effective_sample_size(self.weights_)
        r_target = (len(pool) / len(target)) * self.target_proba_ / (1.0 - self.target_proba_)
        self.outside_share_ = float(np.mean(r_target / (1.0 + r_target) >= self.support_threshold))
        self.overlap_ok_, self.warning_ = _overlap(self, len(pool))
        return self

    def risk(self, pool_errors: Any, *, level: float = 1.0 - defaults.DELTA, n_boot: int = defaults.LABEL_FREE_N_BOOT, random_state: int = 0) -> LabelFreeEstimate:
        """R̂_T = Σ r̂_i e_i / Σ r̂_i with a percentile bootstrap over pool items (weights held fixed)."""
        _fitted(self, "weights_")
        e = _errors(pool_errors, len(self.weights_))
        _check_level(level, n_boot)
        w = self.weights_
        est = float(np.dot(w, e) / w.sum())
        rng = np.random.default_rng(random_state)
        boot = []
        for s in range(0, n_boot, _CHUNK):
            idx = rng.integers(0, e.size, (min(_CHUNK, n_boot - s), e.size))
            boot.append((w[idx] * e[idx]).sum(axis=1) / w[idx].sum(axis=1))
        lo, hi = _percentile(np.concatenate(boot), level)
        return _estimate(self, est, (lo, hi), level, "covariate shift: P(error | prompt) the same on pool and target; weights from a calibrated classifier")


class SliceWeights:
    """Target shares of the pool's difficulty slices by black-box shift estimation; the target risk
    is the share-weighted mean of the pool's per-slice errors.

    Args:
        features: feature set of the prompt-to-slice classifier (as :class:`DensityRatioWeights`).
        n_splits: folds of the cross-fit of the slice classifier.
        overlap: settings of the domain classifier used for the overlap check (a
            :class:`DensityRatioWeights`, unfitted, copied before fitting; default: the same
            features and seed).
        max_residual: largest ‖M π̂ − μ̂‖₁ for ``overlap_ok_`` (above it the target's predicted slices
            are not a mixture of the pool's: the slice-share-shift assumption fails).
        min_singular: smallest singular value of M for ``overlap_ok_`` (below it π̂ is ill-determined).
        random_state: seed of the folds and the classifiers.

    Fitted attributes: ``slices_`` (sorted slice labels), ``pool_shares_``, ``confusion_`` (M[i, j] =
    P(f = i | s = j)), ``target_predicted_`` (μ̂), ``target_shares_`` (π̂), ``residual_`` (‖M π̂ − μ̂‖₁),
    ``weights_`` (pool, mean 1), ``ess_``, ``outside_share_``, ``overlap_ok_``, ``warning_``.
    """

    name = "slice_weights"

    def __init__(
        self,
        *,
        features: Any = "structure+tfidf",
        n_splits: int = 5,
        overlap: DensityRatioWeights | None = None,
        max_residual: float = 0.1,
        min_singular: float = 0.05,
        random_state: int = 0,
    ) -> None:
        if not (isinstance(n_splits, int) and n_splits >= 2):
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        for key, v in (("max_residual", max_residual), ("min_singular", min_singular)):
            if not (isinstance(v, (int, float)) and 0.0 <= v < 2.0):
                raise ValueError(f"{key} must lie in [0, 2), got {v!r}")
        self.features, self.n_splits, self.random_state = features, n_splits, random_state
        self.max_residual, self.min_singular = max_residual, min_singular
        self.overlap = overlap if overlap is not None else DensityRatioWeights(features=features, random_state=random_state)

    def fit(self, pool_prompts: Sequence[str], pool_slices: Sequence[Any], target_prompts: Sequence[str]) -> SliceWeights:
        from sklearn.linear_model import LogisticRegression

        pool, target = _texts(pool_prompts, "pool_prompts"), _texts(target_prompts, "target_prompts")
        if len(pool_slices) != len(pool):
            raise ValueError(f"pool_slices must hold one slice per pool prompt ({len(pool)}), got {len(pool_slices)}")
        self.slices_, s = np.unique(np.asarray(pool_slices), return_inverse=True)
        k = len(self.slices_)
        if k < 2:
            raise ValueError(f"pool_slices: the slice classifier needs at least 2 slices, got {k} ({self.slices_.tolist()})")
        rows, pipe = _pipeline(self.features, pool + target, LogisticRegression(max_iter=2000))
        oof = _cross_fitted_proba(rows[: len(pool)], s, pipe, self.n_splits, self.random_state).argmax(axis=1)
        pred_t = pipe.fit(rows[: len(pool)], s).predict(rows[len(pool) :])
        self._pool_slice, self._pool_pred, self._target_pred = s, oof, pred_t
        self.pool_shares_ = np.bincount(s, minlength=k) / len(s)
        self.confusion_ = _confusion(s, oof, k)
        self.target_predicted_ = np.bincount(pred_t, minlength=k) / len(pred_t)
        self.target_shares_ = simplex_least_squares(self.confusion_, self.target_predicted_)
        self.residual_ = float(np.abs(self.confusion_ @ self.target_shares_ - self.target_predicted_).sum())
        self.singular_ = float(np.linalg.svd(self.confusion_, compute_uv=False).min())
        self.weights_ = self.target_shares_[s] / self.pool_shares_[s]  # mean 1: π̂ sums to 1, every slice has items
        self.ess_ = effective_sample_size(self.weights_)
        domain = copy.copy(self.overlap).fit(pool, target)  # a copy: one settings object may serve several fits
        self.outside_share_ = domain.outside_share_
        self.support_threshold, self.max_outside = domain.support_threshold, domain.max_outside
        self.min_ess_fraction = domain.min_ess_fraction
        self.overlap_ok_, self.warning_ = _overlap(self, len(pool))
        return self

    def risk(self, pool_errors: Any, *, level: float = 1.0 - defaults.DELTA, n_boot: int = defaults.LABEL_FREE_N_BOOT, random_state: int = 0) -> LabelFreeEstimate:
        """R̂_T = Σ_j π̂_j ē_j, with a percentile bootstrap over pool and target items (classifier held fixed)."""
        _fitted(self, "target_shares_")
        e = _errors(pool_errors, len(self._pool_slice))
        _check_level(level, n_boot)
        est = _slice_risk(self._pool_slice, self._pool_pred, self._target_pred, e, len(self.slices_), self.target_shares_)
        rng = np.random.default_rng(random_state)
        n_p, n_t = e.size, self._target_pred.size
        boot, k = np.empty(n_boot), len(self.slices_)
        lost = 0  # resamples in which a slice has no pool item (its share is then spread over the others)
        for b in range(n_boot):
            ip, it = rng.integers(0, n_p, n_p), rng.integers(0, n_t, n_t)
            lost += int((np.bincount(self._pool_slice[ip], minlength=k) == 0).any())
            boot[b] = _slice_risk(self._pool_slice[ip], self._pool_pred[ip], self._target_pred[it], e[ip], k)
        lo, hi = _percentile(boot, level)
        text = "slice-share shift: P(prompt, error | slice) the same on pool and target; shares by black-box shift estimation"
        if lost > 0.05 * n_boot:
            text += f"; {lost / n_boot:.0%} of the bootstrap resamples lost a slice of the pool (too few items in it)"
        out = _estimate(self, est, (lo, hi), level, text)
        return replace(out, details=dict(out.details) | {"boot_lost_slice": lost / n_boot})


def _confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """M[i, j] = P(pred = i | truth = j); a slice absent from a resample keeps its identity column."""
    joint = np.zeros((k, k))
    np.add.at(joint, (pred, truth), 1.0)
    counts = joint.sum(axis=0)
    m = np.where(counts > 0, joint / np.maximum(counts, 1.0), np.eye(k))
    return m


def _slice_risk(truth, pred, target_pred, errors, k: int, shares: np.ndarray | None = None) -> float:
    """Σ_j π_j ē_j for one (re)sample; a slice with no pool item in the resample has error 0 weight."""
    if shares is None:
        shares = simplex_least_squares(_confusion(truth, pred, k), np.bincount(target_pred, minlength=k) / len(target_pred))
    counts = np.bincount(truth, minlength=k)
    sums = np.bincount(truth, weights=errors, minlength=k)
    present = counts > 0
    mean = np.divide(sums, counts, out=np.zeros(k), where=present)
    w = shares * present
    return float(np.dot(w, mean) / w.sum()) if w.sum() > 0 else float(errors.mean())


def _overlap(est: Any, n_pool: int) -> tuple[bool, str]:
    """Whether the target lies inside the pool's support, and the warning when it does not."""
    problems = []
    if est.outside_share_ > est.max_outside:
        problems.append(
            f"{est.outside_share_:.0%} of the target prompts lie outside the pool's support "
            f"(P(target | x) >= {est.support_threshold}; at most {est.max_outside:.0%} allowed)"
        )
    if est.ess_ < est.min_ess_fraction * n_pool:
        problems.append(f"the pool weights' effective sample size is {est.ess_:.1f} of {n_pool} items")
    if getattr(est, "residual_", 0.0) > getattr(est, "max_residual", np.inf):
        problems.append(f"the target's predicted slices are not a mixture of the pool's (residual {est.residual_:.3f})")
    if getattr(est, "singular_", np.inf) < getattr(est, "min_singular", 0.0):
        problems.append(f"the slice confusion matrix is near-singular (smallest singular value {est.singular_:.3f})")
    return (not problems), ("poor overlap: " + "; ".join(problems)) if problems else ""


def _fitted(est: Any, attr: str) -> None:
    if not hasattr(est, attr):
        raise ValueError(f"{type(est).__name__} is not fitted: call fit(...) first")


def _estimate(est: Any, value: float, interval: tuple[float, float], level: float, assumption: str) -> LabelFreeEstimate:
    details = {
        "ess": float(est.ess_),
        "ess_fraction": float(est.ess_ / len(est.weights_)),
        "outside_share": float(est.outside_share_),
        "overlap_ok": float(est.overlap_ok_),
        "n_pool": float(len(est.weights_)),
    }
    text = assumption + (f". WARNING, {est.warning_}" if est.warning_ else "")
    return LabelFreeEstimate(est.name, value, interval[0], interval[1], level, False, text, details)
