"""The decisions table of a report: one row per race of a run folder (every mixture), the race's
answer (certified at its level for the adapters that were trained) beside the answer over training
seeds (an estimate, :mod:`pacbayes_sft.stats.seeds`), and what each rests on."""

from __future__ import annotations

import pandas as pd

from ..racing.files import race_mixture, race_summaries
from ..stats.seeds import SeedDecision

PREFIX = {"best": "", "epsilon_tie": "tie: ", "cap": "open: ", "open": "open: "}
COLUMNS = ["base", "objective", "n", "mixture", "race", "epsilon", "level", "items", "over_seeds", "seeds", "seconds"]
NOTE = (
    "race: the answer of a race on fresh test items (a single best bucket, an ε-tie: any of them within ε of the "
    "best, or open at the item cap), certified at its level for the adapters that were trained (their mean over "
    "the seeds listed); over_seeds: the answer about the buckets over training randomness too, from every seed's "
    "losses on the race's items (crossed seeds × items model, t intervals; an estimate, not certified), with the "
    "seeds per bucket it used (trained up to decide.max_seeds for its look); mixture: 'test' is "
    "the sweep's own test mixture, others are decide.mixtures (fresh items only)."
)


def _seeds_cell(seeds: dict | None) -> tuple[str, str]:
    if not seeds:
        return "", ""
    if seeds.get("status") != "done":
        return f"not computed ({seeds.get('why', '')})", ""
    d = SeedDecision.from_dict(seeds)
    return PREFIX[d.reason] + ", ".join(d.answer), "/".join(str(v) for v in d.seeds.values())


def decision_table(out_dir) -> pd.DataFrame:
    """One row per finished race of ``out_dir`` (every mixture), by base, objective, n and mixture
    (the test mixture first); empty without races."""
    rows = []
    for doc in race_summaries(out_dir, mixture="*"):
        res, g = doc["result"], doc["group"]
        over, seeds = _seeds_cell(doc.get("seeds"))
        spent = float(doc["seconds"]) + float((doc.get("seeds") or {}).get("seconds", 0.0))
        rows.append({
            "base": g["base"], "objective": g["objective"], "n": int(g["n"]), "mixture": race_mixture(doc) or "test",
            "race": PREFIX[res.reason] + ", ".join(res.answer), "epsilon": res.epsilon, "level": res.level,
            "items": res.n_items, "over_seeds": over, "seeds": seeds or str(len(doc["cell_seeds"])), "seconds": round(spent),
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["base", "objective", "n", "mixture"], key=_order).reset_index(drop=True)


def _order(col: pd.Series) -> pd.Series:
    """Sort key: budgets as numbers, the test mixture first."""
    return col.map(lambda m: "" if m == "test" else m) if col.name == "mixture" else col


SHARED = {"epsilon": lambda v: f"ε {v:g}", "level": lambda v: f"level {v:.0%}"}  # how a shared setting reads


def _shared(table: pd.DataFrame) -> list[str]:
    """The race settings (ε, level) that every race of ``table`` shares: stated once, not per row."""
    return [c for c in SHARED if table[c].nunique() == 1]


def shown_decisions(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as a report shows it: ε and the level as columns only where the races differ in
    them (:func:`decision_counts` states each shared one once)."""
    return table.drop(columns=_shared(table))


def seeds_computed(table: pd.DataFrame) -> pd.Series:
    """Per row: whether the seed stage gave an answer (open or decided)."""
    over = table["over_seeds"]
    return (over.str.len() > 0) & ~over.str.startswith("not computed")


def decided_over_seeds(table: pd.DataFrame) -> pd.Series:
    """Per row: whether the answer over seeds is decided (a best bucket or an ε-tie)."""
    return seeds_computed(table) & ~table["over_seeds"].str.startswith("open")


def decision_counts(table: pd.DataFrame) -> str:
    """One line: races decided (certified) and answers over seeds decided (estimates), never added;
    the race settings every race shares."""
    if table.empty:
        return ""
    raced = int((~table["race"].str.startswith("open")).sum())
    line = f"decided by race (certified for the trained adapters): {raced} of {len(table)}"
    shared = _shared(table)
    if shared:
        line += ", every race at " + " and ".join(SHARED[c](table[c].iloc[0]) for c in shared)
    computed = int(seeds_computed(table).sum())
    if not computed:
        return line
    over = int(decided_over_seeds(table).sum())
    return line + f"; decided over seeds too (estimates, a separate count): {over} of {computed}"
