"""The races run on a sweep, as a markdown table beside what the replay predicted for them.

    python experiments/race_table.py docs/results/cpu_study [--replay runs/race_replay.csv]

One row per race file under ``RUN/race/`` (finished or not): the answer (a single best, an ε-tie,
or the buckets still open), the test items and bucket-item evaluations it took, its compute
seconds, its interval method and item scheme, and, with ``--replay`` (the CSV of
``experiments/race_replay.py``), the replay's median items for the same group, method and the
race's cap. Counts the groups decided by a race.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from pacbayes_sft.stats import RaceResult


def _replayed(path: Path | None) -> dict[tuple, float]:
    if path is None:
        return {}
    with path.open() as f:
        return {(r["base"], r["objective"], int(r["n"]), r["method"], int(r["cap"])): float(r["median_items"])
                for r in csv.DictReader(f)}  # fmt: skip


def rows(run: Path, replay: Path | None = None) -> list[dict]:
    """One dict per race of ``run``: group, status, answer, items, evaluations, seconds, settings."""
    predicted, out = _replayed(replay), []
    for f in sorted((run / "race").glob("*.json")):
        doc = json.loads(f.read_text())
        g, st = doc["group"], doc["settings"]
        method, items_scheme = st.get("confidence", "bernstein"), st.get("items", "mixed")
        row = {"group": f"{g['base']}/{g['objective']}/{g['n']}", "method": method, "items_scheme": items_scheme}
        if doc.get("status") == "done":
            res = RaceResult.from_dict(doc["result"])
            row |= {"answer": res.statement(), "items": res.n_items, "evaluations": res.evaluations, "decided": res.decided}
        else:
            last = doc["rounds"][-1] if doc["rounds"] else {}
            row |= {"answer": "running: " + ", ".join(last.get("contenders", [])), "decided": False}
            row |= {"items": sum(r["n_items"] for r in doc["rounds"]), "evaluations": None}
        row["seconds"] = doc.get("seconds", 0.0)
        row["predicted_items"] = predicted.get((g["base"], g["objective"], g["n"], method, st["max_items"]))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--replay", type=Path, default=None, help="experiments/race_replay.py's CSV")
    args = ap.parse_args(argv)
    table = rows(args.run, args.replay)
    print("| group | answer | test items | bucket-item evaluations | minutes | replay's median items |")
    print("|---|---|---:|---:|---:|---:|")
    for r in table:
        ev = f"{r['evaluations']:,}" if r["evaluations"] is not None else "–"
        pred = f"{r['predicted_items']:,.0f}" if r["predicted_items"] is not None else "–"
        print(f"| {r['group']} | {r['answer']} | {r['items']:,} | {ev} | {r['seconds'] / 60:.1f} | {pred} |")
    done = [r for r in table if r["decided"]]
    print(f"\n{len(done)} of {len(table)} races decided; {sum(r['seconds'] for r in table) / 3600:.2f} compute hours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
