"""The record of one finished cell: what ``cells/<id>.json`` holds, typed.

Two kinds of record live in a run folder: a fine-tuned cell (``objective`` is ``sft`` or ``dft``,
with its bound terms) and a base model's own evaluation (``objective == "base"``, the reference
of per-slice changes; no budget, bucket, seed or terms).

On disk a record is the JSON of :meth:`CellRecord.to_dict`. :data:`SCHEMA_VERSION` 2 adds the
``schema`` key; version 3 adds ``label_free`` (per-item answers and confidences for the label-free
estimators, when the sweep collects them). Older files (version 1: no ``schema``; some without
``loss`` or ``cell_hash``) still load with :meth:`CellRecord.from_dict`, and write back unchanged
but for that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cells import Cell

SCHEMA_VERSION = 3

TERM_KEYS = (
    "point_train_risk",
    "mc_mean_risk",
    "mc_risk_upper",
    "kl",
    "sigma",
    "g_gen",
    "g_gen_maurer",
    "tv",
    "tv_lower",
    "tv_p_value",
    "tv_plug_in",
    "g_ext",
    "total",
    "sqrt_kl_over_n",
    "stoch_test_risk",
    "stoch_test_lower",
    "stoch_test_upper",
)
"""The bound terms a fine-tuned cell records (risks in [0, 1], KL in nats, σ absolute)."""


@dataclass
class CellRecord:
    """One finished cell (or a base model's evaluation).

    rows: tidy per-slice evaluation rows (slice, metric, value, n_examples, model);
    items: per-test-item results as columns (``slice``, ``token_error``, ``exact_match``,
    ``answer_correct``); terms: the flat bound terms (:data:`TERM_KEYS`); sigma_grid: one row
    per σ evaluated; ledger: the δ split; training: the fine-tuning log; seconds: wall time.
    """

    id: str
    base: str
    objective: str
    rows: list[dict]
    items: dict[str, list]
    n: int | None = None
    bucket: str | None = None
    seed: int | None = None
    loss: str | None = None  # None in version-1 records that predate it (the config's loss)
    terms: dict[str, float] = field(default_factory=dict)
    sigma_grid: list[dict] = field(default_factory=list)
    ledger: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    seconds: float | None = None
    config_hash: str | None = None
    cell_hash: str | None = None
    label_free: dict = field(default_factory=dict)  # {"test": columns, "source": columns}
    status: str = "done"
    schema: int = SCHEMA_VERSION

    @property
    def is_base(self) -> bool:
        return self.objective == "base"

    @property
    def key(self) -> tuple:
        """(base, objective, n, bucket, seed), as :attr:`Cell.key`."""
        return (self.base, self.objective, self.n, self.bucket, self.seed)

    @classmethod
    def for_cell(cls, cell: Cell, **fields: Any) -> CellRecord:
        return cls(id=cell.id, base=cell.base, objective=cell.objective, n=cell.n, bucket=cell.bucket,
                   seed=cell.seed, **fields)

    @classmethod
    def for_base(cls, base: str, rows: list[dict], items: dict[str, list]) -> CellRecord:
        return cls(id=f"{base}__base", base=base, objective="base", rows=rows, items=items)

    def stamped(self, hashes: dict[str, str]) -> CellRecord:
        """This record with the folder's ``config_hash`` and ``cell_hash`` (see the store)."""
        self.config_hash, self.cell_hash = hashes["config_hash"], hashes["cell_hash"]
        return self

    def to_dict(self) -> dict:
        """The JSON layout of a cell file (keys in the order version 1 wrote them)."""
        cell = {"id": self.id, "base": self.base, "objective": self.objective}
        if not self.is_base:
            cell = {"base": self.base, "objective": self.objective, "n": self.n, "bucket": self.bucket,
                    "seed": self.seed, "id": self.id}
        d: dict[str, Any] = {"cell": cell, "status": self.status}
        if self.loss is not None:
            d["loss"] = self.loss
        d |= {"rows": self.rows, "items": self.items}
        if not self.is_base:
            d |= {"terms": self.terms, "sigma_grid": self.sigma_grid, "ledger": self.ledger,
                  "training": self.training, "seconds": self.seconds}
        d |= {k: v for k, v in (("config_hash", self.config_hash), ("cell_hash", self.cell_hash)) if v is not None}
        if self.label_free:
            d["label_free"] = self.label_free
        return d | {"schema": self.schema}

    @classmethod
    def from_dict(cls, d: dict) -> CellRecord:
        """A record from a cell file's JSON (schema 1 to 3). ValueError if it is not one."""
        schema = d.get("schema", 1)
        if schema not in range(1, SCHEMA_VERSION + 1):
            raise ValueError(f"cell record schema {schema!r} is newer than this toolkit reads ({SCHEMA_VERSION})")
        cell = d.get("cell")
        if not isinstance(cell, dict) or not {"id", "base", "objective"} <= set(cell):
            raise ValueError("a cell record needs 'cell' with id, base and objective")
        if not isinstance(d.get("rows"), list) or not isinstance(d.get("items"), dict):
            raise ValueError(f"cell record {cell['id']!r} needs 'rows' (a list) and 'items' (a mapping)")
        optional = ("loss", "terms", "sigma_grid", "ledger", "training", "seconds", "config_hash", "cell_hash",
                    "label_free")  # fmt: skip
        return cls(
            id=cell["id"], base=cell["base"], objective=cell["objective"], n=cell.get("n"),
            bucket=cell.get("bucket"), seed=cell.get("seed"), rows=d["rows"], items=d["items"],
            status=d.get("status", "done"), schema=SCHEMA_VERSION, **{k: d[k] for k in optional if k in d},
        )


def cell_terms(cert: Any, stochastic: Any) -> dict[str, float]:
    """The flat :data:`TERM_KEYS` of a cell from its :class:`~pacbayes_sft.certify.Certificate` and
    the stochastic model's test risk (a :class:`~pacbayes_sft.certify.StochasticRisk`)."""
    return {
        "point_train_risk": cert.empirical_risk.point,
        "mc_mean_risk": cert.empirical_risk.mc_mean,
        "mc_risk_upper": cert.empirical_risk.mc_upper,
        "kl": cert.kl.value_nats,
        "sigma": cert.sigma.value,
        "g_gen": cert.g_gen.seeger,
        "g_gen_maurer": cert.g_gen.maurer,
        "tv": cert.tv.estimate,
        "tv_lower": cert.tv.lower,
        "tv_p_value": cert.tv.p_value,
        "tv_plug_in": cert.tv.plug_in,
        "g_ext": cert.g_ext,
        "total": cert.total,
        "sqrt_kl_over_n": (cert.kl.value_nats / cert.n) ** 0.5,
        "stoch_test_risk": stochastic.mean,
        "stoch_test_lower": stochastic.lower,
        "stoch_test_upper": stochastic.upper,
    }
