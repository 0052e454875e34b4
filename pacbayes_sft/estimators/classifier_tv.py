"""Classifier two-sample proxies of TV(P, Q) between a training set P and a test set Q.

For any classifier h and event A = {h says "Q"}: TPR − FPR = Q(A) − P(A) ≤ TV(P, Q). With
cross-fitted (held-out) predictions,

- ``raw_estimate`` = 2·BA − 1 = TPR − FPR on the held-out predictions, BA the balanced accuracy.
  Each fold's classifier h_f is fixed given its training part, and its held-out samples are
  fresh draws, so E[TPR_f − FPR_f] = Q(h_f) − P(h_f) ≤ TV: ``raw_estimate`` is a **lower bound on
  TV in expectation** (up to the rounding of fold sizes: exactly when every fold holds the same
  share of both sides). It can be negative.
- ``estimate`` = max(0, ``raw_estimate``), the value a TV term uses (a TV lies in [0, 1]).
  Clipping never moves it further from the true TV than ``raw_estimate`` (TV ≥ 0), but it moves
  the mean up: at TV = 0 it averages about +0.02 with 320 examples per side, so it is **not** a
  lower bound in expectation. Far from 0 (raw rarely negative) the two agree.
- ``lower`` = a one-sided (1 − δ) lower confidence bound, valid fold by fold: in each of the K
  folds, the Clopper–Pearson lower bound on TPR minus the upper bound on FPR at δ/(2K) each,
  and the largest of the K (:func:`per_fold_lower_bound`; pooling the folds would not be
  valid, since their classifiers share training data);
- ``plug_in`` = mean over the balanced pool of |2ĉ(x) − 1|, ĉ(x) ≈ P(label = Q | x) with balanced
  priors (equals TV when ĉ is exact; overconfident classifiers bias it upward);
- ``p_value`` for H0: P = Q, by permuting labels within each fold against the fixed held-out
  scores (under H0 held-out labels are exchangeable given the scores), with the +1 correction.

Every fitted part of the pipeline — the TF-IDF vocabulary and idf, the scaling of structure
counts, the classifier, the choice among candidates — is fitted on the training part of each
outer fold only, so a held-out prediction never saw its own text; this is what the argument
for ``raw_estimate`` and ``lower`` needs.

Features can only lose information (data processing: TV(φ#P, φ#Q) ≤ TV(P, Q)), and a finite
classifier may miss part of the difference, so these numbers are *proxies*, never certified
upper bounds: ``raw_estimate`` is low in expectation, ``lower`` is low with probability ≥ 1 − δ,
while ``estimate`` (near TV = 0) and ``plug_in`` can read high. Class weights are balanced so
unequal sample sizes do not bias the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta

from .. import defaults
from .features import FeatureSet, _is_text_list, as_feature_matrix, text_feature_sets


@dataclass
class ClassifierTV:
    """Result of :func:`classifier_tv` (see the module docstring for what each number is):
    ``raw_estimate`` is a lower bound on TV in expectation, ``lower`` a (1 − δ) lower
    confidence bound, and ``estimate`` = max(0, ``raw_estimate``) the clipped value a TV term
    uses, biased upward near TV = 0."""

    estimate: float
    raw_estimate: float
    plug_in: float
    lower: float
    p_value: float
    n_p: int
    n_q: int
    delta: float
    classifier: str
    tpr: float
    fpr: float
    fold_classifiers: list[str] = field(default_factory=list)
    kind: str = (
        "proxy: max(0, held-out 2·BA − 1), biased up near TV = 0 (raw_estimate, unclipped, is the lower bound "
        "in expectation); not certified"
    )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# Balanced-accuracy margin by which a more flexible classifier must beat the linear one in inner
# validation to be chosen (about one standard error at a few thousand samples).
SELECTION_MARGIN = 0.01


def clopper_pearson(k: int, n: int, delta: float) -> tuple[float, float]:
    """One-sided (1 − δ) Clopper–Pearson bounds (lower, upper) on a binomial proportion k/n."""
    lo = 0.0 if k == 0 else float(beta.ppf(delta, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - delta, k + 1, n - k))
    return lo, hi


def _candidates(random_state: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic": make_pipeline(
            StandardScaler(with_mean=False), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        ),
        "boosting": HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.1,
            max_leaf_nodes=15,
            min_samples_leaf=40,
            early_stopping=False,
            class_weight="balanced",
            random_state=random_state,
        ),
    }


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    tpr = pred[y == 1].mean()
    tnr = 1 - pred[y == 0].mean()
    return 0.5 * (tpr + tnr)


def _fit_predict(est, X_tr, y_tr, X_te) -> np.ndarray:
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    model = clone(est)  # feature steps included: fitted on the training rows only
    try:
        model.fit(X_tr, y_tr)
    except TypeError:  # estimators without class_weight: weight samples instead
        w = np.where(y_tr == 1, 0.5 / y_tr.mean(), 0.5 / (1 - y_tr.mean()))
        key = f"{model.steps[-1][0]}__sample_weight" if isinstance(model, Pipeline) else "sample_weight"
        model.fit(X_tr, y_tr, **{key: w})
    return model.predict_proba(X_te)[:, 1]


def _classifier_pool(classifier: str | Any, random_state: int, sparse_x: bool) -> dict[str, Any]:
    """The candidate classifiers, simplest first."""
    cands = _candidates(random_state)
    if isinstance(classifier, str):
        if classifier == "auto":
            pool = cands
        elif classifier in cands:
            pool = {classifier: cands[classifier]}
        else:
            raise ValueError(f"classifier must be 'auto', 'logistic', 'boosting' or an estimator, got {classifier!r}")
    elif hasattr(classifier, "fit") and hasattr(classifier, "predict_proba"):
        pool = {type(classifier).__name__: classifier}
    else:
        raise ValueError("classifier must be a name or a scikit-learn classifier with predict_proba")
    if sparse_x and "boosting" in pool and len(pool) > 1:
        pool = {k: v for k, v in pool.items() if k != "boosting"}  # boosting on sparse TF-IDF is slow
    return pool


def _cross_fitted_scores(Xs: dict, y: np.ndarray, pool: dict, n_splits: int, random_state: int):
    """Held-out P(Q | x) for every sample, its fold, and the (features, classifier) pair chosen in
    each fold — by inner validation on that fold's training part only, so the choice never sees
    the samples it is scored on (choosing the best estimate on the scored folds would bias it up).

    ``Xs`` maps a feature-set name to its rows (a feature matrix, or texts); ``pool`` maps a
    candidate name to (feature-set name, estimator), simplest first. An estimator may be a
    pipeline whose first step builds features (TF-IDF, scaled structure counts): it is cloned and
    fitted on the training rows of each fit, so a held-out row never shapes its own features."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    scores = np.empty(len(y))
    fold_of = np.empty(len(y), dtype=int)
    chosen: list[str] = []
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    for f, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
        name = next(iter(pool))
        if len(pool) > 1:
            i_tr, i_va = train_test_split(tr, test_size=0.25, stratify=y[tr], random_state=random_state + f)
            best = -np.inf
            for nm, (feat, est) in pool.items():  # the first (simplest) candidate wins unless beaten clearly
                X = Xs[feat]
                ba = _balanced_accuracy(y[i_va], _fit_predict(est, X[i_tr], y[i_tr], X[i_va]) >= 0.5)
                if ba > best + (SELECTION_MARGIN if best > -np.inf else 0.0):
                    best, name = ba, nm
        chosen.append(name)
        feat, est = pool[name]
        scores[te] = _fit_predict(est, Xs[feat][tr], y[tr], Xs[feat][te])
        fold_of[te] = f
    return scores, fold_of, chosen


def per_fold_lower_bound(pred: np.ndarray, y: np.ndarray, fold_of: np.ndarray, n_splits: int, delta: float) -> float:
    """A (1 − δ) lower confidence bound on TV from cross-fitted predictions.

    The classifier h_f of fold f never saw that fold's samples, so given h_f its held-out counts
    are binomial and TPR_f − FPR_f ≤ TV for every f. Folds share training data, so their counts
    are *not* independent of one another and cannot be pooled. Each fold gets one-sided
    Clopper–Pearson bounds at δ/(2K) (TPR below, FPR above); by the union bound all K hold at
    once, and the largest fold bound is valid: max_f [TPR_f^lo − FPR_f^hi], clipped at 0.
    """
    best = 0.0
    for f in range(n_splits):
        held = fold_of == f
        q, p = pred[held & (y == 1)], pred[held & (y == 0)]
        lo_tpr, _ = clopper_pearson(int(q.sum()), len(q), delta / (2 * n_splits))
        _, hi_fpr = clopper_pearson(int(p.sum()), len(p), delta / (2 * n_splits))
        best = max(best, lo_tpr - hi_fpr)
    return best


def _permutation_p_value(pred, y, fold_of, n_splits: int, raw: float, n_permutations: int, seed: int) -> float:
    """(1 + #{permutations with TPR − FPR ≥ observed}) / (1 + n_permutations), labels permuted within folds."""
    if not n_permutations:
        return 1.0
    rng = np.random.default_rng(seed)
    exceed = 0
    yp = y.copy()
    for _ in range(n_permutations):
        for f in range(n_splits):
            idx = np.flatnonzero(fold_of == f)
            yp[idx] = rng.permutation(y[idx])
        stat = pred[yp == 1].mean() - pred[yp == 0].mean()
        exceed += stat >= raw - 1e-12
    return (1 + exceed) / (1 + n_permutations)


def classifier_tv(
    p_samples: Any,
    q_samples: Any,
    *,
    features: str | Callable | list | None = "auto",
    classifier: str | Any = "auto",
    n_splits: int = 5,
    delta: float = defaults.DELTA,
    n_permutations: int = defaults.TV_PERMUTATIONS,
    random_state: int = 0,
    n_threads: int | None = None,
) -> ClassifierTV:
    """Cross-fitted classifier proxies of TV between samples of P (train) and Q (test).

    Args:
        p_samples, q_samples: numeric arrays (n × d), or sequences of texts.
        features: for texts, "auto" (default: structure counts, TF-IDF and their union, chosen
            with the classifier by inner validation inside each outer fold), "tfidf",
            "structure", "structure+tfidf", a callable mapping a list of texts to an (n × d) array
            (e.g. :class:`~pacbayes_sft.estimators.features.HiddenStateFeatures`), or a list of
            these to choose from. Fitted steps (TF-IDF, the scaling in "structure+tfidf") are
            fitted on each outer fold's training texts only. Ignored for numeric arrays.
        classifier: "auto" (logistic vs gradient boosting, chosen by inner validation inside
            each outer fold), "logistic", "boosting", or a scikit-learn classifier with
            predict_proba.
        n_splits: outer stratified folds (each sample is predicted by a model that did not see it).
        delta: confidence of ``lower``.
        n_permutations: label permutations for ``p_value`` (0 to skip; then p_value = 1).
        random_state: seed of folds, models and permutations.
        n_threads: cap on BLAS/OpenMP threads while fitting (None = library default). On a
            machine shared with another busy process, 1 avoids OpenMP oversubscription, which
            slows gradient boosting by orders of magnitude.
    """
    if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
        raise ValueError(f"n_threads must be an integer >= 1 or None, got {n_threads!r}")
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_threads) if n_threads else nullcontext():
        return _classifier_tv(p_samples, q_samples, features, classifier, n_splits, delta, n_permutations, random_state)


def _feature_sets(p_samples: Any, q_samples: Any, features: Any) -> tuple[dict[str, FeatureSet], int, int]:
    """Candidate feature sets (P rows, then Q rows) by name, and the two sample sizes. Texts get
    their steps unfitted (:class:`~pacbayes_sft.estimators.features.FeatureSet`); numeric arrays
    are their own features."""
    from scipy import sparse

    if _is_text_list(p_samples) and _is_text_list(q_samples):
        return text_feature_sets(p_samples, q_samples, features), len(p_samples), len(q_samples)
    Xp, Xq = as_feature_matrix(p_samples, q_samples)  # numeric (``features`` ignored) or a clear error
    X = sparse.vstack([Xp, Xq]).tocsr() if sparse.issparse(Xp) else np.vstack([Xp, Xq])
    return {"features": FeatureSet(X, sparse=sparse.issparse(X))}, Xp.shape[0], Xq.shape[0]


def _classifier_tv(p_samples, q_samples, features, classifier, n_splits, delta, n_permutations, random_state):
    if not (isinstance(delta, float | int) and 0 < delta < 1):
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    if not isinstance(n_permutations, int) or n_permutations < 0:
        raise ValueError(f"n_permutations must be an integer >= 0, got {n_permutations!r}")
    sets, n_p, n_q = _feature_sets(p_samples, q_samples, features)
    if min(n_p, n_q) < n_splits:
        raise ValueError(f"p_samples and q_samples need at least n_splits={n_splits} samples each, got {n_p} and {n_q}")
    from sklearn.pipeline import make_pipeline

    y = np.r_[np.zeros(n_p, dtype=int), np.ones(n_q, dtype=int)]
    Xs = {feat: fs.data for feat, fs in sets.items()}
    pool = {
        (f"{feat}/{name}" if len(sets) > 1 else name): (feat, est if fs.step is None else make_pipeline(fs.step, est))
        for feat, fs in sets.items()
        for name, est in _classifier_pool(classifier, random_state, fs.sparse).items()
    }
    scores, fold_of, chosen = _cross_fitted_scores(Xs, y, pool, n_splits, random_state)
    pred = scores >= 0.5
    tpr = float(pred[y == 1].mean())
    fpr = float(pred[y == 0].mean())
    raw = tpr - fpr
    lower = per_fold_lower_bound(pred, y, fold_of, n_splits, delta)
    # Plug-in on the balanced pool: weight each side equally.
    plug = 0.5 * np.abs(2 * scores[y == 0] - 1).mean() + 0.5 * np.abs(2 * scores[y == 1] - 1).mean()

    p_value = _permutation_p_value(pred, y, fold_of, n_splits, raw, n_permutations, random_state)
    name = chosen[0] if len(set(chosen)) == 1 else "mixed"
    return ClassifierTV(
        estimate=max(0.0, raw),  # a TV lies in [0, 1]; clipping biases the mean up near TV = 0
        raw_estimate=raw,  # E[raw] ≤ TV: the lower bound in expectation
        plug_in=float(plug),
        lower=lower,
        p_value=float(p_value),
        n_p=n_p,
        n_q=n_q,
        delta=float(delta),
        classifier=name,
        tpr=tpr,
        fpr=fpr,
        fold_classifiers=chosen,
    )
