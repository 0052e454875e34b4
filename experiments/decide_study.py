"""The decide study's numbers (issue 35): how many (group, mixture) races a sweep decided, how many
answers also hold over training seeds, what it cost, and how the label-free picks score on the
decided groups (issue 34).

    pacbayes-sft sweep --config decide_study --out docs/results/decide_study --decide
    python experiments/decide_study.py docs/results/decide_study
    python experiments/decide_study.py docs/results/decide_study docs/results/decide_study_extra \
        --combined docs/results/decide_study/decide_combined.json   # both grids, and their totals

Writes ``decisions.csv`` (one row per race: the race's answer, certified for the trained adapters,
beside the answer over seeds, an estimate) and ``decide_summary.json`` (counts per mixture, with
the ties of every bucket apart, compute in process-hours, and for races whose seed stage has not
run yet its first look, on the race's own seeds) into the run folder, and prints them.
The picks' scores are the report's label-free table (``pacbayes-sft report``), whose
``in_race_answer`` columns this study's races fill on both mixtures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pacbayes_sft.racing.files import RACE_DIR, race_mixture, race_summaries
from pacbayes_sft.racing.groups import Group
from pacbayes_sft.racing.seed_stage import bucket_rows, round_files, seed_matrix
from pacbayes_sft.report.decisions import decided_over_seeds, decision_table
from pacbayes_sft.stats.seeds import decide_over_seeds, look_schedule
from pacbayes_sft.sweep.store import folder_config, valid_cells

# The CPU study's H100 session (docs/RESULTS.md): 118 cells in 1.9 process-hours there against 152
# in 12.2 on these 2 cores, about 5x per process, with 8-12 processes sharing the GPU.
GPU_PER_PROCESS_SPEEDUP, GPU_PROCESSES = 5.0, 10


def counts(run: Path, n_buckets: int) -> dict:
    """Per mixture: races, decided by race (best / ε-tie; ties of every bucket apart), answers over
    seeds decided (best / ε-tie), never added to the races' count, and of the groups both decided,
    how many answers share a bucket (a bucket in both is then right by both)."""
    out: dict[str, dict] = {}
    for doc in race_summaries(run, mixture="*"):
        m = out.setdefault(race_mixture(doc) or "test", dict.fromkeys(
            ["races", "race_best", "race_tie", "race_tie_of_all", "race_open", "seeds_computed", "seeds_best",
             "seeds_tie", "seeds_open", "both_decided", "both_share_a_bucket"], 0))  # fmt: skip
        res = doc["result"]
        m["races"] += 1
        key = {"best": "race_best", "epsilon_tie": "race_tie", "cap": "race_open"}[res.reason]
        m[key] += 1
        m["race_tie_of_all"] += res.reason == "epsilon_tie" and len(res.answer) == n_buckets
        s = doc.get("seeds") or {}
        if s.get("status") == "done":
            m["seeds_computed"] += 1
            m[{"best": "seeds_best", "epsilon_tie": "seeds_tie", "open": "seeds_open"}[s["reason"]]] += 1
            if res.reason != "cap" and s["reason"] != "open":  # both decided: do their answers meet?
                m["both_decided"] += 1
                m["both_share_a_bucket"] += bool(set(res.answer) & set(s["answer"]))
    return out


def first_look(run: Path, doc: dict, max_seeds: int, min_seeds: int) -> dict | None:
    """The seed stage's first look, for a race whose stage has not run, when the seeds it needs are
    the race's own (none trained): the same look a later ``seed_group`` replays first, at the same α
    (its L looks)."""
    g = Group(**doc["group"])
    mix = race_mixture(doc)
    rounds = round_files(run / RACE_DIR / (g.id if mix is None else f"{g.id}@{mix}"))
    rows = {b: bucket_rows(rounds, b) for b in doc["cells"]}
    schedule = look_schedule(len(doc["cell_seeds"]), max_seeds, min_seeds)
    if not schedule or any(r is None or len(r) < schedule[0] for r in rows.values()):
        return None
    mats = {b: seed_matrix({s: rows[b][s] for s in sorted(rows[b])[: schedule[0]]}) for b in rows}
    s = doc["settings"]
    d = decide_over_seeds(mats, epsilon=s["epsilon"], level=s["level"], looks=len(schedule))
    return d.to_dict() | {"status": "first look", "answer": list(d.answer)}


def first_looks(run: Path, max_seeds: int, min_seeds: int) -> list[dict]:
    """One row per finished race without a seed stage: its group, mixture and first look over seeds."""
    rows = []
    for doc in race_summaries(run, mixture="*"):
        if (doc.get("seeds") or {}).get("status") == "done":
            continue
        look = first_look(run, doc, max_seeds, min_seeds)
        if look is not None:
            g = doc["group"]
            rows.append({"group": f"{g['base']}/{g['objective']}/{g['n']}", "mixture": race_mixture(doc) or "test",
                         "reason": look["reason"], "answer": look["answer"], "seeds": look["seeds"]})  # fmt: skip
    return rows


def compute_hours(run: Path) -> dict:
    """Process-hours: the cells (their own seconds), the races' rounds and the seed stage."""
    _, state = folder_config(run)
    cells = sum(float(r.seconds or 0.0) for r in valid_cells(run, state))
    docs = race_summaries(run, mixture="*")
    races = sum(float(d["seconds"]) for d in docs)
    seeds = sum(float((d.get("seeds") or {}).get("seconds", 0.0)) for d in docs)
    total = (cells + races + seeds) / 3600
    return {
        "cells_h": round(cells / 3600, 2), "races_h": round(races / 3600, 2), "seed_stage_h": round(seeds / 3600, 2),
        "total_h": round(total, 2),
        "gpu_projection_h": round(total / (GPU_PER_PROCESS_SPEEDUP * GPU_PROCESSES), 3),
    }  # fmt: skip


def study(run: Path) -> tuple:
    """One run folder's decisions table and summary, both written into it."""
    cfg, _ = folder_config(run)
    table = decision_table(run)
    table.to_csv(run / "decisions.csv", index=False)
    summary = {"counts": counts(run, len(cfg.buckets)), "compute": compute_hours(run),
               "seed_first_looks": first_looks(run, cfg.decide.max_seeds, cfg.decide.min_seeds)}  # fmt: skip
    (run / "decide_summary.json").write_text(json.dumps(summary, indent=1))
    return table, summary


def combined(tables: list, summaries: list[dict]) -> dict:
    """Several folders' studies together: the counts and the compute added up per mixture, and what
    the groups decided over seeds span (bases, objectives, budgets, mixtures)."""
    counts_: dict[str, dict] = {}
    for s in summaries:
        for mix, c in s["counts"].items():
            for k, v in c.items():
                counts_.setdefault(mix, {}).setdefault(k, 0)
                counts_[mix][k] += v
    keys = ["cells_h", "races_h", "seed_stage_h", "total_h", "gpu_projection_h"]
    compute = {k: round(sum(s["compute"][k] for s in summaries), 3) for k in keys}
    decided = pd.concat([t[decided_over_seeds(t)] for t in tables])
    span = {k: sorted(decided[k].unique().tolist()) for k in ("base", "objective", "n", "mixture")}
    return {"counts": counts_, "compute": compute, "decided_over_seeds": len(decided),
            "races": sum(len(t) for t in tables), "decided_over_seeds_span": span}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run folders of the study (several: their totals too)")
    ap.add_argument("--combined", type=Path, help="with several folders: write their totals to this JSON file")
    args = ap.parse_args()
    tables, summaries = zip(*(study(run) for run in args.runs))
    for run, table, summary in zip(args.runs, tables, summaries):
        print(f"== {run}", table.to_string(index=False), json.dumps(summary, indent=1), sep="\n")
    if len(args.runs) > 1:
        total = combined(list(tables), list(summaries)) | {"folders": [str(r) for r in args.runs]}
        print("== together", json.dumps(total, indent=1), sep="\n")
        if args.combined:
            args.combined.write_text(json.dumps(total, indent=1))


if __name__ == "__main__":
    main()
