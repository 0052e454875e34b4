"""``race``: spend fresh test items on the groups whose best bucket is still open
(:mod:`pacbayes_sft.racing`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import console
from ..defaults import RACE_EPSILON, RACE_LEVEL, RACE_MAX_ITEMS, RACE_ROUND_ITEMS
from ..racing import parse_group, race_group, race_groups
from ..racing.seed_stage import seed_group, wants_seed_stage
from ..stats import CONFIDENCES, RaceResult
from ..stats.seeds import SeedDecision
from ..sweep.decide_config import check_min_seeds
from .common import positive_float


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return v


def _cmd_race(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if not run.is_dir():
        raise ValueError(f"--run: {args.run!r} is not a folder (expected a sweep's output directory)")
    if args.max_seeds < 0:
        raise ValueError(f"--max-seeds must be a whole number >= 0, got {args.max_seeds}")
    check_min_seeds(args.min_seeds, args.max_seeds, "--min-seeds")
    groups = [parse_group(args.group)] if args.group else race_groups(run)
    if not groups:
        raise ValueError(f"--run: {args.run!r} has no group with a finished cell in every bucket; run the sweep first")
    for g in groups:
        doc = race_group(
            run,
            g,
            epsilon=args.epsilon,
            level=args.level,
            round_items=args.round_items,
            max_items=args.max_items,
            confidence=args.confidence,
            progress=console.show_progress(),
        )
        if wants_seed_stage(args.max_seeds, len(doc["cell_seeds"])):
            doc = seed_group(run, g, max_seeds=args.max_seeds, min_seeds=args.min_seeds,
                             progress=console.show_progress())  # fmt: skip
        res = RaceResult.from_dict(doc["result"])
        print(
            f"{g}: {res.statement()} ({res.n_items} test items, {res.evaluations} bucket-item evaluations, "
            f"seeds {', '.join(map(str, doc['cell_seeds']))}, {res.confidence} intervals, {doc['seconds']:.0f} s)"
        )
        seeds = doc.get("seeds") or {}
        if seeds.get("status") == "done":
            print(f"{g}: {SeedDecision.from_dict(seeds).statement()}")
        elif seeds:
            print(f"{g}: over seeds: not computed ({seeds['why']})")
    print(f"races: {run / 'race'}")
    return 0


def add_commands(sub) -> None:
    rc = sub.add_parser(
        "race",
        help="race a sweep's buckets on fresh test items until one is best at the level or all are within epsilon",
    )
    rc.add_argument("--run", required=True, help="the sweep's output directory (races go to RUN/race/)")
    rc.add_argument(
        "--group", default="", help="one group BASE/OBJECTIVE/N (e.g. strong/dft/4096); default: every group"
    )
    rc.add_argument(
        "--epsilon",
        type=positive_float,
        default=RACE_EPSILON,
        help="tolerance of a tie, in loss units (default %(default)s)",
    )
    rc.add_argument(
        "--level",
        type=positive_float,
        default=RACE_LEVEL,
        help="probability that the answer is right (default %(default)s)",
    )
    rc.add_argument(
        "--round-items", type=_count, default=RACE_ROUND_ITEMS, help="fresh test items per round (default %(default)s)"
    )
    rc.add_argument(
        "--max-items",
        type=_count,
        default=RACE_MAX_ITEMS,
        help="cap on test items, the sweep's own included (default %(default)s)",
    )
    rc.add_argument(
        "--confidence",
        choices=CONFIDENCES,
        default=None,
        help="interval method: cmeb (conjugate-mixture empirical Bernstein, one-sided split), betting (predictable "
        "plug-in betting sequences) or bernstein (empirical Bernstein with a union over looks); default: a started "
        "race's own, cmeb for a new race",
    )
    rc.add_argument(
        "--max-seeds",
        type=int,
        default=0,
        help="then decide over training seeds too, training up to this many seeds of the buckets still open "
        "(an estimate; default 0: only the sweep's own seeds)",
    )
    rc.add_argument(
        "--min-seeds",
        type=int,
        default=0,
        help="seeds per bucket at the first look over seeds, then a look at every count up to --max-seeds "
        "(default 0: one look, at --max-seeds)",
    )
    rc.set_defaults(func=_cmd_race)
