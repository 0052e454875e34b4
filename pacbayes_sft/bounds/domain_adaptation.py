"""Domain-adaptation forms of the test risk from the disagreement of posterior draws.

Notation. ρ is the posterior; h, h' ~ ρ are two independent draws; D is a distribution of prompts
x with one correct final answer y(x). For the Gibbs classifier G_ρ (answer with a fresh draw):

    R_D(G_ρ) = E_{h~ρ} P_D[h(x) ≠ y]                        (Gibbs risk)
    e_D(ρ)   = E_{h,h'~ρ²} P_D[h(x) ≠ y, h'(x) ≠ y]          (expected joint error)
    d_D(ρ)   = E_{h,h'~ρ²} P_D[h(x) ≠ h'(x)]                 (expected disagreement, no labels)

S is the training (source) distribution, T the test (target) one; the source sample is labelled,
the target sample holds prompts only.

**Binary vs multiclass.** With two classes, h ≠ h' means exactly one draw is wrong, so
R = e + ½d exactly. With final answers (mod 7 for iGSM, or free text, plus "no answer") two
wrong draws may give different wrong answers. By symmetry of (h, h'),
R − e = P(h wrong, h' right) = P(h right, h' wrong), and both events imply h ≠ h', so

    d ≥ P(h wrong, h' right) + P(h right, h' wrong) = 2(R − e),   i.e.   R ≤ e + ½d,

with equality iff two wrong draws never disagree; in general R = e + ½d − ½w with
w = P(both wrong, h ≠ h'). Also h ≠ h' implies at least one draw is wrong (one correct answer),
so d ≤ 2R: **R ≥ ½d holds for any number of classes** and needs no labels at all.

Forms implemented (each returns a :class:`LabelFreeEstimate`):

- :func:`disagreement_form_2013` (Germain, Habrard, Laviolette & Morvant, ICML 2013; tightened in
  "PAC-Bayes and Domain Adaptation", Neurocomputing 2020):
  R_T(G_ρ) ≤ R_S(G_ρ) + ½|d_S(ρ) − d_T(ρ)| + λ_ρ. With λ_ρ = |ẽ_T − ẽ_S| and ẽ = R − ½d the
  inequality is the identity R_T − R_S = ½(d_T − d_S) + (ẽ_T − ẽ_S), so it holds for multiclass;
  in binary ẽ = e and λ_ρ = |e_T − e_S| is the papers' term. (With the papers' λ = |e_T − e_S|
  it can fail for multiclass: ẽ = e − ½w.) λ_ρ needs target labels, so the value reported is the
  form at λ_ρ = 0: an **estimate**, not a bound.
- :func:`joint_error_form_2016` (Germain et al., ICML 2016): R_T(G_ρ) ≤ ½d_T(ρ) + β_q·e_S(ρ)^{1−1/q}
  + η_{T∖S}, where β_q = (E_{x~S}[(T(x)/S(x))^q])^{1/q} (a moment of the density ratio) and
  η_{T∖S} ≤ P_T(x outside the support of S). It rests on R_T ≤ e_T + ½d_T (true for multiclass,
  above) and Hölder's inequality on e_T, so it **holds for multiclass**. β and η are not estimable
  from samples: β is the caller's (default 1, q = ∞: the target lies inside the source support with
  density ratio ≤ 1, i.e. no shift where the joint errors are), η = 0.
- :func:`half_disagreement_lower` : R_T(G_ρ) ≥ ½d_T(ρ), a **certified lower bound** from target
  prompts alone.

Intervals: every proportion gets a two-sided (1 − δ/K) interval (:func:`proportion_interval`) and
the K intervals hold together with probability ≥ 1 − δ (union bound); the form's range over the
box of intervals is reported. Items must be i.i.d. draws of their distribution and every item's
draws independent of every other item's (per-row draws do this).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

from .. import defaults
from ._validate import check_delta
from .kl import kl_inverse_lower, kl_inverse_upper


@dataclass(frozen=True)
class LabelFreeEstimate:
    """An estimate of the test risk (in [0, 1]) from test prompts without test answers.

    ``[lower, upper]`` is an interval at confidence ``level`` for the quantity the estimator
    estimates; ``certified`` is True only when that interval contains the test risk itself with
    probability ≥ ``level`` with no assumption beyond i.i.d. items and independent draws.
    ``assumptions`` says what else the number rests on; ``details`` holds its ingredients.
    """

    name: str
    estimate: float
    lower: float
    upper: float
    level: float
    certified: bool
    assumptions: str
    details: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("estimate", "lower", "upper"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{key} must be a finite number, got {v!r}")
        if not self.lower <= self.upper:
            raise ValueError(f"lower must be <= upper, got {self.lower!r} > {self.upper!r}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {self.level!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"details": dict(self.details)}


def _is_missing(a: Any) -> bool:
    return a is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(a, str) and not a.strip())


def answer_codes(answers: Sequence[Any], name: str, table: dict[str, int] | None = None) -> np.ndarray:
    """Integer codes of final answers (equal answers, equal codes; ``table`` shares the codes across
    calls); "no answer" (None, NaN or an empty string) is −1, so two missing answers agree. Answers
    are strings or integers, compared as stripped text (normalise numbers before, e.g. with
    :func:`pacbayes_sft.estimators.answers.canonical_answer`)."""
    if isinstance(answers, (str, bytes, Mapping)) or not hasattr(answers, "__len__"):
        raise ValueError(f"{name} must be a sequence of final answers, got {type(answers).__name__}")
    table = {} if table is None else table
    codes = np.empty(len(answers), dtype=np.int64)
    for i, a in enumerate(answers):
        if _is_missing(a):
            codes[i] = -1
            continue
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (str, int, np.integer)):
            raise ValueError(f"{name}[{i}] must be a string, an integer or None (no answer), got {a!r}")
        codes[i] = table.setdefault(str(a).strip(), len(table))
    return codes


def as_binary(values: Any, name: str) -> np.ndarray:
    """0/1 (or bool) values as an int array; ValueError naming ``name`` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold 0/1 values, got {values!r}") from exc
    if arr.ndim != 1 or arr.size == 0 or not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be a non-empty 1-D sequence of 0/1 values")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class PosteriorDraws:
    """Final answers of k ≥ 2 independent posterior draws on the same n items, and, on a labelled
    sample, whether each was correct: ``answers[j][i]`` is draw j's answer on item i (shape (k, n)),
    ``correct[j][i]`` ∈ {0, 1}. Every item's draws must be independent of every other item's.
    ``name`` prefixes the fields in error messages."""

    answers: Sequence[Sequence[Any]]
    correct: Sequence[Sequence[Any]] | None = None
    name: str = "draws"

    def _field(self, name: str) -> str:
        return f"{self.name}.{name}" if self.name else name

    def codes(self) -> np.ndarray:
        """(k, n) integer answer codes, one table shared by all draws (−1: no answer)."""
        answers = self._field("answers")
        k = len(self.answers) if hasattr(self.answers, "__len__") and not isinstance(self.answers, str) else 0
        if k < 2:
            raise ValueError(f"{answers} must list the answers of at least 2 draws, got {k}")
        table: dict[str, int] = {}
        rows = [answer_codes(a, f"{answers}[{j}]", table) for j, a in enumerate(self.answers)]
        if len({r.size for r in rows}) != 1 or rows[0].size == 0:
            raise ValueError(f"{answers}: every draw needs one answer per item (same, non-zero length)")
        return np.stack(rows)

    def wrong(self) -> np.ndarray:
        """(k, n) 0/1 errors (1 − correct)."""
        correct = self._field("correct")
        if self.correct is None:
            raise ValueError(f"{correct} is required (a labelled sample)")
        shape = self.codes().shape
        if len(self.correct) != shape[0]:
            raise ValueError(f"{correct} must have one row per draw ({shape[0]}), got {len(self.correct)}")
        rows = [as_binary(c, f"{correct}[{j}]") for j, c in enumerate(self.correct)]
        if any(r.size != shape[1] for r in rows):
            raise ValueError(f"{correct} must have one value per item ({shape[1]}) in every row")
        return 1 - np.stack(rows)


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(k) for b in range(a + 1, k)]


def per_item_disagreement(draws: PosteriorDraws) -> np.ndarray:
    """d_i = mean over the k(k−1)/2 pairs of draws of [answers differ], in [0, 1]; E d_i = d_D(ρ)."""
    c = draws.codes()
    return np.mean([c[a] != c[b] for a, b in _pairs(c.shape[0])], axis=0)


def per_item_terms(draws: PosteriorDraws) -> dict[str, np.ndarray]:
    """Per item of a labelled sample: ``risk`` r_i (mean over the k draws of [wrong]; E r_i = R_D(G_ρ)),
    ``joint_error`` e_i (mean over pairs of [both wrong]; E e_i = e_D(ρ)) and ``disagreement`` d_i.
    Each is an average over one item's own draws, so the n values are i.i.d. in [0, 1].

    Checks that answers and correctness agree, as R ≤ e + ½d needs: equal answers equally judged,
    no correct "no answer", and no two different correct answers (one correct answer per item).
    """
    c, w = draws.codes(), draws.wrong()
    bad = ((c == -1) & (w == 0)).any(axis=0)
    for a, b in _pairs(c.shape[0]):
        bad |= ((c[a] == c[b]) & (w[a] != w[b])) | ((w[a] == 0) & (w[b] == 0) & (c[a] != c[b]))
    if bad.any():
        raise ValueError(
            f"{draws._field('correct')} contradicts {draws._field('answers')} on {int(bad.sum())} item(s) (first: "
            f"{int(np.flatnonzero(bad)[0])}): equal answers judged differently, a correct 'no answer', or two "
            "different correct answers; extract answers the way the judge reads them"
        )
    pairs = _pairs(c.shape[0])
    return {
        "risk": w.mean(axis=0),
        "joint_error": np.mean([w[a] * w[b] for a, b in pairs], axis=0),
        "disagreement": np.mean([c[a] != c[b] for a, b in pairs], axis=0),
    }


def _mean_bounds(v: np.ndarray, d_lo: float, d_hi: float) -> tuple[float, float]:
    """(lower at failure d_lo, upper at failure d_hi) on the mean of i.i.d. values in [0, 1]."""
    n, mean = v.size, float(v.mean())
    if np.isin(v, (0.0, 1.0)).all():
        k = int(v.sum())
        lo = 0.0 if k == 0 else float(beta_dist.ppf(d_lo, k, n - k + 1))
        hi = 1.0 if k == n else float(beta_dist.ppf(1 - d_hi, k + 1, n - k))
    else:
        lo = float(kl_inverse_lower(mean, math.log(1.0 / d_lo) / n))
        hi = float(kl_inverse_upper(mean, math.log(1.0 / d_hi) / n))
    return min(lo, mean), max(hi, mean)


def _unit_values(values: Any, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or np.isnan(v).any() or ((v < 0) | (v > 1)).any():
        raise ValueError(f"{name} must be a non-empty 1-D array of values in [0, 1]")
    return v


def proportion_interval(values: Any, delta: float, name: str = "values") -> tuple[float, float, float]:
    """(mean, lower, upper): a two-sided (1 − δ) interval on the mean μ of n i.i.d. values in [0, 1].

    0/1 values (a binomial count k of n): Clopper–Pearson, Beta(δ/2; k, n−k+1) and
    Beta(1−δ/2; k+1, n−k). Other values in [0, 1]: the Chernoff kl⁻¹ bounds
    kl⁻¹_lower/upper(mean, ln(2/δ)/n) (each side at δ/2), which hold for any i.i.d. variables in
    [0, 1] because such a variable is dominated by a Bernoulli of the same mean in convex order.
    """
    d = float(check_delta(delta))
    v = _unit_values(values, name)
    return (float(v.mean()), *_mean_bounds(v, d / 2, d / 2))


def one_sided_lower(values: Any, delta: float, name: str = "values") -> tuple[float, float]:
    """(mean, lower): a one-sided (1 − δ) lower confidence bound on the mean, as in
    :func:`proportion_interval` with the whole δ on the lower side."""
    d = float(check_delta(delta))
    v = _unit_values(values, name)
    return float(v.mean()), _mean_bounds(v, d, 0.5)[0]


def _clip(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


def disagreement_form_2013(
    source: PosteriorDraws, target: PosteriorDraws, *, delta: float = defaults.DELTA, signed: bool = False
) -> LabelFreeEstimate:
    """R_S(G_ρ) + ½|d_T(ρ) − d_S(ρ)|: the 2013/2020 domain-adaptation form at λ_ρ = 0 (an estimate).

    ``signed=True`` reports R_S + ½(d_T − d_S) instead, the identity above with ẽ_T = ẽ_S (exact
    when the joint errors do not shift). Interval: R_S, d_S and d_T each at δ/3 (union bound),
    and the form's range over that box; it covers the λ = 0 value, not R_T. Values clipped to [0, 1].
    """
    d = float(check_delta(delta))
    src, dis_t = per_item_terms(source), per_item_disagreement(target)
    r_s, r_lo, r_hi = proportion_interval(src["risk"], d / 3, "source risk")
    ds, ds_lo, ds_hi = proportion_interval(src["disagreement"], d / 3, "source disagreement")
    dt, dt_lo, dt_hi = proportion_interval(dis_t, d / 3, "target disagreement")
    if signed:
        est, lo, hi = r_s + 0.5 * (dt - ds), r_lo + 0.5 * (dt_lo - ds_hi), r_hi + 0.5 * (dt_hi - ds_lo)
    else:
        est = r_s + 0.5 * abs(dt - ds)
        hi = r_hi + 0.5 * max(abs(dt_hi - ds_lo), abs(dt_lo - ds_hi))
        lo = r_lo + 0.5 * max(0.0, dt_lo - ds_hi, ds_lo - dt_hi)
    form = "R_S + ½(d_T − d_S)" if signed else "R_S + ½|d_T − d_S|"
    return LabelFreeEstimate(
        name="da_2013_signed" if signed else "da_2013",
        estimate=_clip(est),
        lower=_clip(lo),
        upper=_clip(hi),
        level=1.0 - d,
        certified=False,
        assumptions=(
            f"{form} with λ_ρ = 0; λ_ρ = |(R_T − ½d_T) − (R_S − ½d_S)| needs test labels (|e_T − e_S| in "
            "binary), so this is an estimate, not a bound; holds for multiclass with that λ_ρ. "
            f"Interval of the λ = 0 value: R_S, d_S, d_T at δ/3 = {d / 3:.3g} each"
        ),
        details={
            "source_risk": r_s,
            "source_disagreement": ds,
            "target_disagreement": dt,
            "n_source": float(src["risk"].size),
            "n_target": float(dis_t.size),
        },
    )


def _check_beta_q(beta: float, q: float) -> tuple[float, float]:
    try:
        b, qq = float(beta), float(q)
    except (TypeError, ValueError):
        raise ValueError(f"beta and q must be numbers, got beta={beta!r}, q={q!r}") from None
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if math.isnan(qq) or not qq > 1:
        raise ValueError(f"q must be > 1 (math.inf for the supremum of the density ratio), got {q!r}")
    return b, qq


def joint_error_form_2016(
    source: PosteriorDraws,
    target: PosteriorDraws,
    *,
    beta: float = 1.0,
    q: float = math.inf,
    delta: float = defaults.DELTA,
) -> LabelFreeEstimate:
    """½d_T(ρ) + β·e_S(ρ)^{1−1/q} (η_{T∖S} = 0): the 2016 form with the caller's β.

    Its upper end is a (1 − δ) upper bound on R_T(G_ρ) *if* β_q ≤ ``beta`` and the target has no
    mass outside the source support (η = 0); neither can be checked from samples, so it is not
    certified. β_q ≥ P_T(supp S), and β_q = 1 with η = 0 means T = S where errors can occur.
    Interval: d_T and e_S each at δ/2; the form increases in both. Values clipped to [0, 1].
    """
    d = float(check_delta(delta))
    b, qq = _check_beta_q(beta, q)
    power = 1.0 if math.isinf(qq) else 1.0 - 1.0 / qq
    src, dis_t = per_item_terms(source), per_item_disagreement(target)
    dt, dt_lo, dt_hi = proportion_interval(dis_t, d / 2, "target disagreement")
    es, es_lo, es_hi = proportion_interval(src["joint_error"], d / 2, "source joint error")

    def form(dd: float, ee: float) -> float:
        return 0.5 * dd + b * ee**power

    return LabelFreeEstimate(
        name="da_2016",
        estimate=_clip(form(dt, es)),
        lower=_clip(form(dt_lo, es_lo)),
        upper=_clip(form(dt_hi, es_hi)),
        level=1.0 - d,
        certified=False,
        assumptions=(
            f"½d_T + β·e_S^(1−1/q) with β = {b:g}, q = {qq:g} given and η_(T∖S) = 0: an upper bound on the Gibbs "
            "test risk only if the density-ratio moment β_q ≤ β and the test prompts lie inside the source "
            f"support (unchecked); holds for multiclass. δ/2 = {d / 2:.3g} each on d_T and e_S"
        ),
        details={
            "target_disagreement": dt,
            "source_joint_error": es,
            "beta": b,
            "q": qq,
            "n_source": float(src["risk"].size),
            "n_target": float(dis_t.size),
        },
    )


def half_disagreement_lower(target: PosteriorDraws, *, delta: float = defaults.DELTA) -> LabelFreeEstimate:
    """½d_T(ρ) ≤ R_T(G_ρ): a certified lower bound on the Gibbs test risk from prompts alone.

    ``lower`` = ½·(one-sided (1 − δ) lower confidence bound on d_T); ``upper`` = 1 (no upper bound
    without labels); ``estimate`` = ½d̂_T, itself an estimate from below. Holds for any number of
    classes given one correct answer per prompt.
    """
    d = float(check_delta(delta))
    dis_t = per_item_disagreement(target)
    dt, dt_lo = one_sided_lower(dis_t, d, "target disagreement")
    return LabelFreeEstimate(
        name="half_disagreement",
        estimate=0.5 * dt,
        lower=0.5 * dt_lo,
        upper=1.0,
        level=1.0 - d,
        certified=True,
        assumptions=(
            "R_T ≥ ½d_T for the Gibbs (posterior-draw) model: two different answers cannot both be right; "
            "a lower bound only (upper = 1); needs i.i.d. test prompts and independent draws per item"
        ),
        details={"target_disagreement": dt, "n_target": float(dis_t.size)},
    )
