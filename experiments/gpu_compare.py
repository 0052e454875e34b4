"""Compare a sweep's cell records with reference records, cell by cell: the demo run on a GPU
against the committed CPU run (``docs/results/demo/cells``).

    python experiments/gpu_compare.py REFERENCE CANDIDATE [--out DIR] [--allow-missing]

REFERENCE and CANDIDATE are run folders or their ``cells/`` folders. For every reference cell
(read through :class:`~pacbayes_sft.sweep.record.CellRecord`) it compares

- **items**: each per-test-item metric (token_error, exact_match, answer_correct); an item differs
  when its values differ by more than 1e-6 (records keep 6 digits);
- **terms**: every bound term (risks in [0, 1], KL in nats, TV, totals), a term agreeing when
  |got − ref| ≤ atol + rtol·|ref|;
- **σ_p**: ``terms["sigma"]``, the prior scale of the two-stage certificate (the chosen σ of the
  grid in the data-free recipe), a relative difference.

A cell is *identical* (every item equal, every term and σ_p equal to 1e-9 relative), *close*
(within the tolerances), *differs*, or *missing* from the candidate. The tolerances are for the
same computation on another device: float rounding (kernel choice, summation order) changes the
adapter's last bits, so greedy decoding may flip at near-ties and a Monte-Carlo or TV count may
move by a unit or two (1/64 of a 64-example MC risk). A device bug (a draw that is not the CPU
draw, a mask on the wrong rows) moves far more than that. σ_p is a multiple of the RMS of the
adapter's seeded initial factors, drawn on the CPU on every device, so only another candidate's
choice changes it: its tolerance is tight. Writes ``compare.md`` and ``compare.json`` under
``--out``; exits 0 when the verdict is identical or close, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pacbayes_sft.sweep.record import CellRecord
from pacbayes_sft.sweep.store import read_record

ITEM_METRICS = ("token_error", "exact_match", "answer_correct")
ITEM_EPS = 1e-6
"""Per-item values closer than this are equal (the records round them to 6 digits)."""
SAME_REL = 1e-9
"""Relative difference below which a term counts as identical (float formatting, nothing else)."""
VERDICTS = ("identical", "close", "differs", "missing")


@dataclass(frozen=True)
class Tolerance:
    """How far a candidate cell may be from its reference and still count as *close*."""

    items: float = 0.03  # share of test items whose value may differ, per metric
    term_atol: float = 0.05  # absolute part of a term's tolerance (risk units, nats for KL)
    term_rtol: float = 0.05  # relative part of a term's tolerance
    sigma_rtol: float = 1e-4  # relative tolerance of σ_p

    def __post_init__(self) -> None:
        for name in ("items", "term_atol", "term_rtol", "sigma_rtol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Tolerance.{name} must be a finite number >= 0, got {value!r}")
        if self.items > 1:
            raise ValueError(f"Tolerance.items is a share of the test items, in [0, 1]; got {self.items!r}")


@dataclass
class CellComparison:
    """One cell: its verdict, the items that differ per metric (and of how many), the term with
    the largest difference relative to its tolerance, and σ_p in both runs."""

    cell: str
    verdict: str
    items_total: int = 0
    items_differ: dict[str, int] = field(default_factory=dict)
    worst_term: str = ""
    worst_ref: float | None = None
    worst_got: float | None = None
    sigma_ref: float | None = None
    sigma_got: float | None = None
    notes: list[str] = field(default_factory=list)


def _differ(a: float | None, b: float | None, atol: float, rtol: float) -> float:
    """|a − b| / (atol + rtol·|a|): ≤ 1 within the tolerance; 0 when both are missing or NaN."""
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else math.inf
    gap = abs(a - b)
    if gap == 0:
        return 0.0
    scale = atol + rtol * abs(a)
    return math.inf if scale == 0 else gap / scale


def _compare_items(ref: CellRecord, got: CellRecord, out: CellComparison) -> bool:
    """Fill the item counts; False when the two runs did not score the same test items."""
    if ref.items.get("slice") != got.items.get("slice"):
        out.notes.append("the test items differ (another test set or order)")
        return False
    out.items_total = len(ref.items.get("slice", []))
    for metric in ITEM_METRICS:
        a, b = ref.items.get(metric), got.items.get(metric)
        if a is None and b is None:
            continue
        if a is None or b is None or len(a) != len(b):
            out.notes.append(f"item metric {metric} is missing in one run")
            return False
        out.items_differ[metric] = sum(abs(float(x) - float(y)) > ITEM_EPS for x, y in zip(a, b))
    return True


def _compare_terms(ref: CellRecord, got: CellRecord, tol: Tolerance, out: CellComparison) -> float:
    """The largest term difference in units of its tolerance, that term recorded in ``out``
    (none when every term is equal)."""
    worst = 0.0
    for key in sorted(set(ref.terms) | set(got.terms)):
        a, b = ref.terms.get(key), got.terms.get(key)
        d = _differ(a, b, tol.term_atol, tol.term_rtol)
        if d > worst:
            worst, out.worst_term, out.worst_ref, out.worst_got = d, key, a, b
    return worst


def compare_records(ref: CellRecord, got: CellRecord | None, tol: Tolerance | None = None) -> CellComparison:
    """The comparison of one candidate record with its reference (``got`` None: missing)."""
    tol = tol or Tolerance()
    out = CellComparison(cell=ref.id, verdict="missing")
    if got is None:
        return out
    if got.id != ref.id:
        raise ValueError(f"got is the record of cell {got.id!r}, the reference is {ref.id!r}")
    same_items = _compare_items(ref, got, out)
    term_gap = _compare_terms(ref, got, tol, out)
    out.sigma_ref, out.sigma_got = ref.terms.get("sigma"), got.terms.get("sigma")
    sigma_gap = _differ(out.sigma_ref, out.sigma_got, 0.0, tol.sigma_rtol)
    shares = [k / max(1, out.items_total) for k in out.items_differ.values()]
    exact = (
        same_items
        and not any(out.items_differ.values())
        and _compare_terms(ref, got, Tolerance(term_atol=0.0, term_rtol=SAME_REL), CellComparison(ref.id, "")) <= 1
        and _differ(out.sigma_ref, out.sigma_got, 0.0, SAME_REL) <= 1
    )
    if exact:
        out.verdict = "identical"
    elif same_items and all(s <= tol.items for s in shares) and term_gap <= 1 and sigma_gap <= 1:
        out.verdict = "close"
    else:
        out.verdict = "differs"
    return out


def _records(folder: Path, name: str) -> dict[str, CellRecord]:
    folder = Path(folder)
    cells = folder / "cells" if (folder / "cells").is_dir() else folder
    if not cells.is_dir():
        raise ValueError(f"{name} must be a run folder or its cells/ folder, got {str(folder)!r}")
    records = {p.stem: read_record(p) for p in sorted(cells.glob("*.json"))}
    return {k: r for k, r in records.items() if r is not None}


def compare_folders(reference: str | Path, candidate: str | Path, tol: Tolerance | None = None) -> list[CellComparison]:
    """Every finished reference cell against the candidate's record of it, in cell-id order."""
    ref = _records(Path(reference), "reference")
    if not ref:
        raise ValueError(f"reference {str(reference)!r} holds no finished cell records")
    got = _records(Path(candidate), "candidate")
    return [compare_records(r, got.get(cid), tol) for cid, r in sorted(ref.items())]


def overall_verdict(rows: list[CellComparison], *, allow_missing: bool = False) -> str:
    """The worst verdict over the cells; ``allow_missing`` ignores cells the candidate did not
    run (a partial run, e.g. the CPU dry run), unless no cell was run at all."""
    seen = [r.verdict for r in rows if not (allow_missing and r.verdict == "missing")]
    if not seen:
        return "missing"
    return max(seen, key=VERDICTS.index)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.6g}"


def markdown_table(rows: list[CellComparison], tol: Tolerance | None = None) -> str:
    """The comparison as a markdown table, one row per cell, with the tolerances it used."""
    tol = tol or Tolerance()
    lines = [
        f"Tolerances: items {tol.items:.0%} per metric, terms {tol.term_atol:g} + {tol.term_rtol:g}·|ref|, "
        f"σ_p {tol.sigma_rtol:g} relative.",
        "",
        "| cell | verdict | items differing ("
        + " / ".join(ITEM_METRICS)
        + ") | largest term gap (ref → got) | σ_p (ref → got) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        items = " / ".join(str(r.items_differ.get(m, "—")) for m in ITEM_METRICS)
        items = f"{items} of {r.items_total}" if r.items_total else "—"
        term = f"{r.worst_term}: {_fmt(r.worst_ref)} → {_fmt(r.worst_got)}" if r.worst_term else "—"
        sigma = f"{_fmt(r.sigma_ref)} → {_fmt(r.sigma_got)}" if r.sigma_ref is not None else "—"
        note = f" ({'; '.join(r.notes)})" if r.notes else ""
        lines.append(f"| {r.cell} | {r.verdict}{note} | {items} | {term} | {sigma} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", help="run folder (or cells/ folder) of the reference records")
    ap.add_argument("candidate", help="run folder (or cells/ folder) of the records to check")
    ap.add_argument("--out", default="", help="folder for compare.md and compare.json (default: print only)")
    ap.add_argument("--allow-missing", action="store_true", help="cells the candidate did not run do not fail")
    for name, default in asdict(Tolerance()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=default, help=f"Tolerance.{name}")
    args = ap.parse_args(argv)
    tol = Tolerance(items=args.items, term_atol=args.term_atol, term_rtol=args.term_rtol, sigma_rtol=args.sigma_rtol)
    rows = compare_folders(args.reference, args.candidate, tol)
    verdict = overall_verdict(rows, allow_missing=args.allow_missing)
    table = markdown_table(rows, tol)
    text = f"Verdict: **{verdict}** ({args.candidate} against {args.reference})\n\n{table}"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(text)
        doc = {"verdict": verdict, "tolerance": asdict(tol), "cells": [asdict(r) for r in rows]}
        (out / "compare.json").write_text(json.dumps(doc, indent=1))
    return 0 if verdict in ("identical", "close") else 1


if __name__ == "__main__":
    raise SystemExit(main())
