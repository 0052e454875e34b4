"""The certificate of one adapter: every term of Proposition 4.1, typed, with what is certified.

    total = U_MC + G_gen + G_ext + ε        (risks in loss units; KL in nats)

- U_MC ≥ E_π R̂_S: Monte-Carlo upper bound on the stochastic training risk (certified, δ_MC);
- G_gen = PAC-Bayes bound(U_MC, KL, n) − U_MC (certified: i.i.d. training data, prior fixed
  before training, union over the σ grid);
- G_ext = (b − a)·TV: certified only when the TV is a certified upper bound — a classifier
  two-sample TV is a *proxy* (clipped at 0 and biased up near TV = 0; its unclipped
  ``raw_estimate`` is the lower bound in expectation), so a total built on it is an
  estimate.

Which terms are certified is computed from what each term is (:meth:`Certificate.certified_terms`),
never written by hand. :meth:`Certificate.to_dict` gives a JSON document (schema version
:data:`SCHEMA_VERSION`); :meth:`Certificate.from_dict` reads it back, and also reads documents
written before the schema was versioned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..bounds.two_gap import TwoGapBound, certification_statement

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EmpiricalRisk:
    """Training risk of the posterior mean (``point``) and of the stochastic model (MC)."""

    point: float
    mc_mean: float
    mc_upper: float
    m: int
    mc_scheme: str
    mc_losses: int


@dataclass(frozen=True)
class KLTerm:
    """KL(π_train ‖ π_pre) at the chosen σ, in nats, and the parameter space of the Gaussians."""

    value_nats: float
    space: str


@dataclass(frozen=True)
class SigmaChoice:
    """The chosen prior/posterior scale, the rule that chose it, and the grid it was chosen from."""

    value: float
    rule: str
    grid: list[float]
    interior: bool | None = None  # False: the bound's minimum is at an end of the grid (widen it)
    reference_rms: float | None = None  # for a relative grid: the RMS the multiples apply to
    per_family: dict | None = None  # with per-module sigma: the chosen sigma of each module family


@dataclass(frozen=True)
class DeltaSplit:
    """How the failure probability δ was spent (a :class:`~pacbayes_sft.bounds.DeltaLedger` dump)."""

    total: float
    ledger: dict
    per_grid_point_bound: float
    per_grid_point_mc: float
    tv: float


@dataclass(frozen=True)
class GenGap:
    """G_gen under the Seeger (kl) bound and under the looser Maurer (square-root) bound."""

    seeger: float
    maurer: float


@dataclass(frozen=True)
class TVTerm:
    """The TV(D_test, D_train) value used in G_ext, and what kind of value it is.

    ``estimate`` is the value in G_ext; it lies in [0, 1], as a TV must. From a classifier
    (:meth:`from_result`) it is max(0, held-out 2·BA − 1): never further from the true TV than
    the unclipped value, but biased *up* near TV = 0, so it is not a lower bound in expectation.
    The unclipped held-out value, whose expectation is at most the true TV (a lower bound in
    expectation), is kept as ``details["raw_estimate"]`` (:attr:`raw_estimate`); ``lower`` is a
    (1 − δ) lower confidence bound. None of them is an upper bound, so G_ext built on them is an estimate.
    """

    estimate: float
    lower: float | None
    p_value: float | None
    plug_in: float
    n_p: int
    n_q: int
    kind: str
    certified: bool = False
    details: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, result: Any, *, certified: bool = False) -> TVTerm:
        """From a :class:`~pacbayes_sft.estimators.ClassifierTV` (or any object with ``to_dict``)."""
        return cls.from_dict(result.to_dict() | {"certified": certified})

    @classmethod
    def plain(cls, value: float, n_p: int, n_q: int, kind: str, *, certified: bool = False) -> TVTerm:
        """A TV value without a confidence interval or test (e.g. a histogram or exact TV)."""
        return cls(value, None, None, value, n_p, n_q, kind, certified)

    @classmethod
    def from_dict(cls, d: dict) -> TVTerm:
        names = {f.name for f in fields(cls)} - {"details"}
        return cls(**{k: d[k] for k in names if k in d}, details={k: v for k, v in d.items() if k not in names})

    @property
    def raw_estimate(self) -> float:
        """The unclipped held-out TPR − FPR (may be negative; a lower bound on TV in expectation)
        when the term came from a classifier, else ``estimate``."""
        return float(self.details.get("raw_estimate", self.estimate))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("details", "certified")}
        return d | self.details | ({"certified": True} if self.certified else {})


def _describe_terms(risk: EmpiricalRisk, tv: TVTerm) -> tuple[list[str], list[str]]:
    certified = [
        f"empirical_risk.mc_upper (Chernoff kl bound over {risk.mc_losses} independent posterior losses)",
        "g_gen (PAC-Bayes, union over the sigma grid)",
    ]
    estimated = []
    if tv.certified:
        certified.append("g_ext (certified upper bound on TV)")
    else:
        estimated.append(f"g_ext: {tv.kind}, so the total is NOT certified")
    return certified, estimated


@dataclass(frozen=True)
class Certificate:
    """Every term of the two-gap bound for one adapter (see the module docstring)."""

    n: int
    loss: str
    loss_range: tuple[float, float]
    empirical_risk: EmpiricalRisk
    kl: KLTerm
    sigma: SigmaChoice
    delta: DeltaSplit
    g_gen: GenGap
    tv: TVTerm
    two_gap: TwoGapBound
    grid: list[dict]
    seed: int
    versions: dict
    schema_version: int = SCHEMA_VERSION
    prior: dict = field(default_factory=dict)  # what the prior is centred at, and on which data

    @property
    def g_ext(self) -> float:
        return self.two_gap.g_ext

    @property
    def eps(self) -> float:
        return self.two_gap.eps

    @property
    def total(self) -> float:
        return self.two_gap.total

    @property
    def certified_terms(self) -> list[str]:
        return _describe_terms(self.empirical_risk, self.tv)[0]

    @property
    def estimated_terms(self) -> list[str]:
        return _describe_terms(self.empirical_risk, self.tv)[1]

    @property
    def certified(self) -> bool:
        """True only when every term of the total is certified."""
        return not self.estimated_terms and self.two_gap.certified

    def statement(self) -> str:
        """One sentence saying what the total is."""
        return certification_statement(self.two_gap)

    def to_dict(self) -> dict:
        """JSON-ready document (the layout of schema version 1)."""
        return {
            "schema_version": self.schema_version,
            "n": self.n,
            "loss": self.loss,
            "loss_range": list(self.loss_range),
            "empirical_risk": asdict(self.empirical_risk),
            "kl": asdict(self.kl),
            "sigma": asdict(self.sigma),
            "delta": asdict(self.delta),
            "g_gen": asdict(self.g_gen),
            "tv": self.tv.to_dict(),
            "g_ext": self.g_ext,
            "eps": self.eps,
            "total": self.total,
            "grid": self.grid,
            "certified_terms": self.certified_terms,
            "estimated_terms": self.estimated_terms,
            "certified": self.certified,
            "seed": self.seed,
            "versions": self.versions,
            "two_gap": self.two_gap.to_dict(),
            "prior": self.prior,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Certificate:
        """Read a document written by :meth:`to_dict` (or by ``certify`` before schema versions)."""
        version = d.get("schema_version", 0)
        if version > SCHEMA_VERSION:
            raise ValueError(f"certificate schema_version {version} is newer than this toolkit's {SCHEMA_VERSION}")
        tg = dict(d["two_gap"])
        tg["loss_range"] = tuple(tg["loss_range"])
        tg["certified_terms"] = tuple(tg.get("certified_terms", ()))
        tg["estimated_terms"] = tuple(tg.get("estimated_terms", ()))
        tg.pop("certified", None)
        return cls(
            n=int(d["n"]),
            loss=d["loss"],
            loss_range=tuple(d["loss_range"]),
            empirical_risk=EmpiricalRisk(**d["empirical_risk"]),
            kl=KLTerm(**d["kl"]),
            sigma=SigmaChoice(**d["sigma"]),
            delta=DeltaSplit(**d["delta"]),
            g_gen=GenGap(**d["g_gen"]),
            tv=TVTerm.from_dict(d["tv"]),
            two_gap=TwoGapBound(**tg),
            grid=list(d["grid"]),
            seed=int(d["seed"]),
            versions=dict(d["versions"]),
            schema_version=SCHEMA_VERSION,
            prior=dict(d.get("prior", {})),
        )

    def __iter__(self) -> Iterator[Any]:
        """Legacy unpacking ``two_gap, doc = certify(...)`` of the pre-Certificate API."""
        return iter((self.two_gap, self.to_dict()))


def numbers(doc: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a (nested) certificate document, keyed by its dotted path; for comparing
    two documents number by number."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(doc, (list, tuple)):
        for i, v in enumerate(doc):
            out |= numbers(v, f"{prefix}[{i}]")
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool) and math.isfinite(doc):
        out[prefix] = float(doc)
    return out
