"""Item response theory (1PL / 2PL) by regularised maximum likelihood.

    1PL: P(correct_jk) = σ(θ_j − b_k)
    2PL: P(correct_jk) = σ(a_k (θ_j − b_k)),  a_k = exp(α_k) > 0

θ_j is subject j's ability, b_k item k's difficulty, a_k its discrimination. The fit maximises
the Bernoulli log-likelihood of the observed entries (NaN = not observed) plus Gaussian priors
θ ~ N(0, 1), b ~ N(0, prior_b²), α ~ N(0, prior_log_a²) — a joint MAP with analytic gradients,
solved by scipy's L-BFGS. The N(0, 1) prior on θ fixes the scale and location. Because the
likelihood conditions on who answered what, difficulties stay right when strong subjects mostly
answer hard items (where proportion correct ranks items wrongly).

py-irt needs pyro and girth is unmaintained, so the few lines of the model live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit


@dataclass
class IRTResult:
    """Fitted IRT parameters (arrays aligned with ``subjects`` and ``items``)."""

    model: str
    difficulty: np.ndarray
    discrimination: np.ndarray
    ability: np.ndarray
    subjects: list = field(default_factory=list)
    items: list = field(default_factory=list)
    heldout_auc: float | None = None
    n_observed: int = 0
    converged: bool = True

    def predict_proba(self, subject_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(correct) for (subject index, item index) pairs."""
        return expit(self.discrimination[item_idx] * (self.ability[subject_idx] - self.difficulty[item_idx]))

    def item_table(self):
        import pandas as pd

        return pd.DataFrame({"item": self.items, "difficulty": self.difficulty, "discrimination": self.discrimination})


def _to_matrix(responses: Any) -> tuple[np.ndarray, list, list]:
    """A subjects × items float matrix with NaN for missing, from an array or a long table."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(responses, pd.DataFrame):
        cols = {"subject", "item", "correct"}
        if not cols <= set(responses.columns):
            raise ValueError(f"responses as a table needs columns {sorted(cols)}, got {list(responses.columns)}")
        if responses.duplicated(["subject", "item"]).any():
            raise ValueError("responses has more than one row for some (subject, item) pair")
        wide = responses.pivot(index="subject", columns="item", values="correct")
        return wide.to_numpy(dtype=float), list(wide.index), list(wide.columns)
    try:
        mat = np.asarray(responses, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            "responses must be a subjects × items array of 0/1/NaN or a (subject, item, correct) table"
        ) from exc
    if mat.ndim != 2:
        raise ValueError(f"responses must be 2-D (subjects × items), got {mat.ndim} dimensions")
    return mat, list(range(mat.shape[0])), list(range(mat.shape[1]))


@dataclass
class IRTObjective:
    """Negative log-posterior of the 1PL/2PL model and its analytic gradient (nats).

    With z_o = a_k (θ_j − b_k) for each observation o = (j, k, y), a_k = exp(ℓ_k) (ℓ = 0 in 1PL):

        −log p = −Σ_o [y log σ(z) + (1 − y) log σ(−z)] + ½‖θ‖² + ½‖b‖²/s_b² + ½‖ℓ‖²/s_ℓ²

    Parameters are packed as x = (θ_1..J, b_1..K[, ℓ_1..K]). Calling it returns (value, gradient).
    """

    subject: np.ndarray
    item: np.ndarray
    y: np.ndarray
    n_subjects: int
    n_items: int
    two_pl: bool
    prior_b: float
    prior_log_a: float

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        J, K = self.n_subjects, self.n_items
        th, b = x[:J], x[J : J + K]
        la = x[J + K :] if self.two_pl else np.zeros(K)
        return th, b, la

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        th, b, la = self.unpack(x)
        s, i, y = self.subject, self.item, self.y
        a = np.exp(la)
        z = a[i] * (th[s] - b[i])
        ll = np.sum(y * log_expit(z) + (1 - y) * log_expit(-z))
        prior = 0.5 * np.sum(th**2) + 0.5 * np.sum(b**2) / self.prior_b**2
        if self.two_pl:
            prior += 0.5 * np.sum(la**2) / self.prior_log_a**2
        r = y - expit(z)  # d ll / d z
        grad = [
            np.bincount(s, weights=r * a[i], minlength=self.n_subjects) - th,
            -np.bincount(i, weights=r * a[i], minlength=self.n_items) - b / self.prior_b**2,
        ]
        if self.two_pl:
            grad.append(np.bincount(i, weights=r * z, minlength=self.n_items) - la / self.prior_log_a**2)
        return -(ll - prior), -np.concatenate(grad)


def fit_irt(
    responses: Any,
    model: str = "2pl",
    *,
    prior_b: float = 3.0,
    prior_log_a: float = 0.5,
    heldout_fraction: float = 0.0,
    random_state: int = 0,
    max_iter: int = 2000,
) -> IRTResult:
    """Fit a 1PL or 2PL IRT model.

    Args:
        responses: subjects × items array of 0/1 with NaN for missing, or a DataFrame with
            columns (subject, item, correct).
        model: "1pl" or "2pl".
        prior_b: standard deviation of the Gaussian prior on difficulties.
        prior_log_a: standard deviation of the prior on log-discriminations (2PL).
        heldout_fraction: fraction of observed entries held out to report ``heldout_auc``
            (the parameters returned are fit on the rest; 0 = use everything, no AUC).
        random_state: seed of the held-out split.
    """
    if model not in ("1pl", "2pl"):
        raise ValueError(f"model must be '1pl' or '2pl', got {model!r}")
    if not (prior_b > 0 and prior_log_a > 0):
        raise ValueError("prior_b and prior_log_a must be > 0")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction!r}")
    mat, subjects, items = _to_matrix(responses)
    obs = ~np.isnan(mat)
    if not obs.any():
        raise ValueError("responses has no observed entries")
    vals = mat[obs]
    if not np.isin(vals, (0.0, 1.0)).all():
        raise ValueError("responses must contain only 0, 1 or NaN")
    J, K = mat.shape
    sj, ik = np.nonzero(obs)
    yv = mat[sj, ik]
    test_mask = np.zeros(len(yv), dtype=bool)
    if heldout_fraction > 0:
        rng = np.random.default_rng(random_state)
        test_mask = rng.random(len(yv)) < heldout_fraction
    tr = ~test_mask
    s_tr, i_tr, y_tr = sj[tr], ik[tr], yv[tr]
    two = model == "2pl"

    obj = IRTObjective(s_tr, i_tr, y_tr, J, K, two, prior_b, prior_log_a)
    x0 = np.zeros(J + K + (K if two else 0))
    res = minimize(obj, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    th, b, la = obj.unpack(res.x)
    out = IRTResult(
        model=model,
        difficulty=b.copy(),
        discrimination=np.exp(la),
        ability=th.copy(),
        subjects=subjects,
        items=items,
        n_observed=int(tr.sum()),
        converged=bool(res.success),
    )
    if heldout_fraction > 0 and test_mask.any():
        from sklearn.metrics import roc_auc_score

        y_te = yv[test_mask]
        if len(np.unique(y_te)) == 2:
            out.heldout_auc = float(roc_auc_score(y_te, out.predict_proba(sj[test_mask], ik[test_mask])))
    return out


def response_matrix(correct: dict, items: list | None = None):
    """Subjects × items table from per-model correctness, for rating test items by IRT.

    ``correct`` maps a subject (e.g. a fine-tuned model's name) to a mapping item → 0/1 (or a
    sequence aligned with ``items``). Returns a DataFrame (subjects × items, NaN = not answered).
    """
    import pandas as pd

    if not correct:
        raise ValueError("correct must map at least one subject to its answers")
    rows = {}
    for subj, ans in correct.items():
        if isinstance(ans, dict):
            rows[subj] = ans
        else:
            if items is None:
                raise ValueError("items must be given when answers are sequences")
            if len(ans) != len(items):
                raise ValueError(f"answers of {subj!r} have {len(ans)} entries, items has {len(items)}")
            rows[subj] = dict(zip(items, ans))
    return pd.DataFrame.from_dict(rows, orient="index").astype(float)
