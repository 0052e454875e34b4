"""What real races would need: the race replayed on a committed study's recorded per-item losses,
for every interval method.

    OMP_NUM_THREADS=1 python experiments/race_replay.py --run docs/results/cpu_study \\
        --caps 4000 40000 --reps 20 --out runs/race_replay.csv

For each (base, objective, n) group of the run folder (the groups ``pacbayes-sft race`` would
race), round 0 is what a real race's round 0 is: the recorded test items, each bucket's loss
seed-averaged per item over the seeds every bucket has (cells read through the package's own
loaders: ``folder_config``, ``valid_cells``, ``group_cells``, ``item_losses``). Fresh rounds of
``--round-items`` items are drawn with replacement from those recorded items, an item's bucket
losses kept together (so the pairing stays), i.e. a bootstrap world whose true bucket means are the
recorded ones. Every rep draws one stream of items, shared by both methods and all caps (common
random numbers), and runs :class:`~pacbayes_sft.stats.allocation.PairedRace` on it with each
confidence method ("cmeb", the conjugate-mixture confidence sequence with the one-sided split;
"betting", the betting confidence sequence; "bernstein", empirical Bernstein with a union over
looks) and each cap. Per group, method and cap the CSV holds the
fraction of reps decided (best or ε-tie), the median items, the median bucket-item evaluations
(items × contenders summed over rounds, round 0 included; ``fresh`` without it, the part a real race
would compute) and the modal answer; the summary counts the groups decided in most reps and sums
the groups' median evaluations, then compares each method's median items with "betting"'s, per
group and pooled by the recorded gap between the two best buckets (``runner_up_gap``).

The committed races (``<run>/race/<group>/round_NNN.json``: the fresh problems' real losses) are
replayed too, round by round, with every method: where another method decides on fewer rounds it
needs no loss the recorded race lacks; a method that keeps a bucket the recorded race dropped runs
out of losses and is reported as undecided at that round ("out"). Single-threaded: about a minute
on the CPU study (18 groups, 20 reps, 3 methods).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from pacbayes_sft.certify.config import item_losses
from pacbayes_sft.defaults import RACE_EPSILON, RACE_LEVEL, RACE_MAX_ITEMS, RACE_ROUND_ITEMS
from pacbayes_sft.racing import Group, group_cells, race_groups
from pacbayes_sft.stats import CONFIDENCES, PairedRace, RaceResult
from pacbayes_sft.sweep.store import folder_config
from pacbayes_sft.validation import race_answer_right

COLUMNS = (
    "base",
    "objective",
    "n",
    "method",
    "cap",
    "reps",
    "round0_items",
    "buckets",
    "decided_frac",
    "best_frac",
    "tie_frac",
    "median_items",
    "median_evaluations",
    "median_fresh_evaluations",
    "mean_evaluations",
    "modal_answer",
    "modal_frac",
    "right_frac",
    "runner_up_gap",
)
SHORT = {"best": "best", "epsilon_tie": "tie", "cap": "cap"}


def round_zero(run: Path, group: Group) -> dict[str, np.ndarray]:
    """bucket → its seed-averaged recorded per-item losses under the config's loss (the race's round 0)."""
    cfg, state = folder_config(run)
    out = {}
    for bucket, recs in group_cells(run, cfg, state, group).items():
        try:
            out[bucket] = np.mean([item_losses(cfg.bound.loss, r.items) for r in recs], axis=0)
        except KeyError:
            raise ValueError(f"--run: cells of {group} have no per-item results for loss {cfg.bound.loss!r}") from None
    return out


def replay(
    losses: dict[str, np.ndarray], idx: np.ndarray, args: argparse.Namespace, cap: int, method: str
) -> RaceResult:
    """One race: round 0 = the recorded items, fresh round r = items idx[(r−1)R : rR] of them."""
    race = PairedRace(args.epsilon, args.level, args.round_items, cap, confidence=method)
    race.partial_fit(losses)
    while not race.done_:
        take = idx[(len(race.history_) - 1) * args.round_items : len(race.history_) * args.round_items]
        race.partial_fit({b: losses[b][take] for b in race.contenders_})
    return race.result_


def _answer(res: RaceResult) -> str:
    """``reason:buckets``, a tie's or a cap's buckets as a set (sorted by name, not by this rep's means)."""
    return f"{res.reason}:{'|'.join(res.answer if res.reason == 'best' else sorted(res.answer))}"


def summarise(group: Group, method: str, cap: int, results: list[RaceResult], losses: dict[str, np.ndarray]) -> dict:
    """One CSV row: the reps of one group, method and cap."""
    n0, means = len(next(iter(losses.values()))), {b: float(v.mean()) for b, v in losses.items()}
    k = len(results[0].items_used)
    evals = np.array([r.evaluations for r in results], dtype=float)
    modal, count = Counter(_answer(r) for r in results).most_common(1)[0]
    return {
        "base": group.base,
        "objective": group.objective,
        "n": group.n,
        "method": method,
        "cap": cap,
        "reps": len(results),
        "round0_items": n0,
        "buckets": k,
        "decided_frac": np.mean([r.decided for r in results]),
        "best_frac": np.mean([r.reason == "best" for r in results]),
        "tie_frac": np.mean([r.reason == "epsilon_tie" for r in results]),
        "median_items": float(np.median([r.n_items for r in results])),
        "median_evaluations": float(np.median(evals)),
        "median_fresh_evaluations": float(np.median(evals - n0 * k)),
        "mean_evaluations": float(evals.mean()),
        "modal_answer": modal,
        "modal_frac": count / len(results),
        "right_frac": np.mean([race_answer_right(r, means, results[0].epsilon) for r in results]),
        "runner_up_gap": float(np.diff(sorted(means.values())[:2])[0]),
    }


def run_group(run: Path, gi: int, group: Group, args: argparse.Namespace) -> list[dict]:
    """All reps, methods and caps of one group; the same item stream for every method and cap."""
    losses = round_zero(run, group)
    n0 = len(next(iter(losses.values())))
    fresh = max(args.caps) - n0 + args.round_items
    per = {(m, c): [] for m in args.methods for c in args.caps}
    for rep in range(args.reps):
        idx = np.random.default_rng([args.seed, gi, rep]).integers(0, n0, size=max(fresh, 0))
        for m, c in per:
            per[(m, c)].append(replay(losses, idx, args, c, m))
    return [summarise(group, m, c, res, losses) for (m, c), res in per.items()]


def _print_tables(rows: list[dict], args: argparse.Namespace, n_groups: int) -> None:
    keys = [(m, c) for c in args.caps for m in args.methods]
    print("group".ljust(22) + "".join(f"{m}@{c}".rjust(22) for m, c in keys))
    by = {(r["base"], r["objective"], r["n"], r["method"], r["cap"]): r for r in rows}
    for g in dict.fromkeys((r["base"], r["objective"], r["n"]) for r in rows):
        cells = [by[(*g, m, c)] for m, c in keys]
        line = "".join(
            f"{r['decided_frac']:>5.0%} {r['median_items']:>7.0f} it {SHORT[r['modal_answer'].split(':')[0]]:>4}"
            for r in cells
        )
        print(f"{g[0]}/{g[1]}/{g[2]}".ljust(22) + line)
    print("(per cell: fraction of reps decided, median items, modal stop reason)")
    for m in args.methods:
        sel = [r for r in rows if r["method"] == m]
        print(
            f"{m}: answers right in the bootstrap world (true means = the recorded ones) in "
            f"{np.mean([r['right_frac'] for r in sel]):.1%} of races, {min(r['right_frac'] for r in sel):.0%} at worst"
        )
    for c in args.caps:
        for m in args.methods:
            sel = [r for r in rows if r["method"] == m and r["cap"] == c]
            decided = sum(r["decided_frac"] > 0.5 for r in sel)
            total = sum(r["median_evaluations"] for r in sel)
            fresh = sum(r["median_fresh_evaluations"] for r in sel)
            print(
                f"cap {c:>6} {m:<9}: {decided:>2}/{n_groups} groups decided in most reps; "
                f"total evaluations {total:,.0f} (fresh {fresh:,.0f}; sums of group medians)"
            )


GAP_BINS = ((0.0, 0.02), (0.02, 0.03), (0.03, 0.05), (0.05, 1.0))


def _ratio_line(label: str, sel: list[tuple[dict, dict[str, dict]]], others: list[str]) -> str:
    """Pooled ratios over "betting": of the summed median items, and the median of the groups' ratios."""
    base = sum(b["median_items"] for b, _ in sel)
    cells = [
        f"{sum(o[m]['median_items'] for _, o in sel) / base:>6.2f} {np.median([o[m]['median_items'] / b['median_items'] for b, o in sel]):>6.2f}"
        for m in others
    ]
    return f"{label:<24}{len(sel):>3} {base:>9,.0f}" + "".join(c.rjust(16) for c in cells)


def _print_ratios(rows: list[dict], args: argparse.Namespace) -> None:
    """Each method's median items over "betting"'s at the largest cap: per group, then pooled by the
    recorded runner-up gap and by betting's modal stop reason."""
    if "betting" not in args.methods or len(args.methods) < 2:
        return
    cap, others = max(args.caps), [m for m in args.methods if m != "betting"]
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["cap"] == cap:
            by.setdefault((r["base"], r["objective"], r["n"]), {})[r["method"]] = r
    print(f"\nmedian items over betting's, cap {cap} (pooled: ratio of summed medians, median of group ratios)")
    print("group".ljust(16) + "gap".rjust(8) + "betting".rjust(12) + "".join(m.rjust(16) for m in others))
    for g, per in by.items():
        b = per["betting"]
        cells = "".join(f"{per[m]['median_items'] / b['median_items']:.2f}".rjust(16) for m in others)
        reason = SHORT[b["modal_answer"].split(":")[0]]
        print(
            f"{g[0]}/{g[1]}/{g[2]}".ljust(16)
            + f"{b['runner_up_gap']:8.3f}"
            + f"{b['median_items']:>7.0f} {reason:>4}"
            + cells
        )
    pairs = [(per["betting"], per) for per in by.values()]
    print("pooled".ljust(24) + "  n   betting" + "".join(f"{m} sum/med".rjust(16) for m in others))
    for lo, hi in GAP_BINS:
        sel = [(b, o) for b, o in pairs if lo <= b["runner_up_gap"] < hi]
        if sel:
            print(_ratio_line(f"gap {lo:.2f}-{hi:.2f}", sel, others))
    for reason in ("epsilon_tie", "best"):
        sel = [(b, o) for b, o in pairs if b["modal_answer"].startswith(reason)]
        if sel:
            print(_ratio_line(f"betting ends {SHORT[reason]}", sel, others))
    print(_ratio_line("all groups", pairs, others))


def committed(run: Path, methods: list[str]) -> list[dict]:
    """Every committed race of ``run`` replayed on its own round files with each method (see the
    module docstring): items and stop reason ("out": the rounds lack a contender's losses)."""
    rows = []
    for f in sorted((run / "race").glob("*.json")):
        doc, rounds = json.loads(f.read_text()), sorted((run / "race" / f.stem).glob("round_*.json"))
        st, data = doc["settings"], [json.loads(p.read_text())["losses"] for p in rounds]
        g = doc["group"]
        for m in methods:
            race, reason = (
                PairedRace(st["epsilon"], st["level"], st["round_items"], st["max_items"], confidence=m),
                "open",
            )
            for losses in data:
                want = race.contenders_ or list(losses)
                if not set(want) <= set(losses):
                    reason = "out"
                    break
                race.partial_fit({b: losses[b] for b in want})
                if race.done_:
                    reason = race.result_.reason
                    break
            rows.append({"group": f"{g['base']}/{g['objective']}/{g['n']}", "recorded": st.get("confidence", "bernstein"),
                         "method": m, "items": race.n_items_, "reason": reason,
                         "answer": _answer(race.result_) if race.done_ else "open:" + "|".join(sorted(race.contenders_))})  # fmt: skip
    return rows


def _print_committed(rows: list[dict], methods: list[str]) -> None:
    if not rows:
        return
    print("\ncommitted races replayed on their own rounds (items, stop reason)")
    print(
        "group".ljust(18)
        + "".join(m.rjust(18) for m in methods)
        + "".join(f"{m}/betting".rjust(18) for m in methods if m != "betting")
    )
    by = {(r["group"], r["method"]): r for r in rows}
    for g in dict.fromkeys(g for g, _ in by):
        line = "".join(
            f"{by[(g, m)]['items']:>9,} {SHORT.get(by[(g, m)]['reason'], by[(g, m)]['reason']):>8}" for m in methods
        )
        if "betting" in methods:
            line += "".join(
                f"{by[(g, m)]['items'] / by[(g, 'betting')]['items']:>18.2f}" for m in methods if m != "betting"
            )
        print(g.ljust(18) + line)
    decided = {
        g: {m for m in methods if by[(g, m)]["reason"] in ("best", "epsilon_tie")}
        for g in dict.fromkeys(g for g, _ in by)
    }
    for m in (m for m in methods if m != "betting" and "betting" in methods):
        both = [g for g, ms in decided.items() if {m, "betting"} <= ms]
        if not both:
            continue
        tot = sum(by[(g, m)]["items"] for g in both) / sum(by[(g, "betting")]["items"] for g in both)
        same = sum(by[(g, m)]["answer"] == by[(g, "betting")]["answer"] for g in both)
        only = [g for g, ms in decided.items() if m in ms and "betting" not in ms]
        print(f"{m}: {tot:.2f}x betting's items over the {len(both)} races both decided (same answer, as a set, in {same}); "
              f"decided where betting did not: {', '.join(only) or 'none'}")  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", default="docs/results/cpu_study", help="a sweep's run folder with finished cells")
    ap.add_argument(
        "--caps",
        type=int,
        nargs="+",
        default=[RACE_MAX_ITEMS, 10 * RACE_MAX_ITEMS],
        help="caps on items, round 0 included",
    )
    ap.add_argument("--reps", type=int, default=20, help="replays per group")
    ap.add_argument("--epsilon", type=float, default=RACE_EPSILON, help="tolerance of a tie, loss units")
    ap.add_argument("--level", type=float, default=RACE_LEVEL, help="probability the answer is right")
    ap.add_argument("--round-items", type=int, default=RACE_ROUND_ITEMS, help="fresh items per round")
    ap.add_argument("--methods", nargs="+", choices=CONFIDENCES, default=list(CONFIDENCES), help="interval methods")
    ap.add_argument("--seed", type=int, default=0, help="seed of the resampled item streams")
    ap.add_argument("--out", default="runs/race_replay.csv", help="CSV path (its folder is created)")
    args = ap.parse_args(argv)
    if not Path(args.run).is_dir():
        ap.error(f"--run: {args.run!r} is not a folder (expected a sweep's output directory)")
    for name in ("reps", "round_items"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.caps) < 2:
        ap.error(f"--caps must be >= 2, got {args.caps}")
    for name in ("epsilon", "level"):
        if not 0 < getattr(args, name) < 1:
            ap.error(f"--{name} must be in (0, 1), got {getattr(args, name)}")
    args.caps, args.methods = sorted(set(args.caps)), list(dict.fromkeys(args.methods))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run, t0 = Path(args.run), time.perf_counter()
    groups = race_groups(run)
    if not groups:
        raise SystemExit(f"--run: {args.run!r} has no group with a finished cell in every bucket")
    rows = []
    for gi, g in enumerate(groups):
        rows += run_group(run, gi, g, args)
        print(f"[{time.perf_counter() - t0:6.1f} s] {g}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    _print_tables(rows, args, len(groups))
    _print_ratios(rows, args)
    _print_committed(committed(run, args.methods), args.methods)
    print(f"wrote {out} ({len(rows)} rows, {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
