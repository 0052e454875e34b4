"""Which look schedule decides more groups over seeds? A replay on a finished study's own variance
components (THEORY §11 "One look by default").

For every race of the run folder, the first two seeds' per-item losses on the race's items give each
bucket's mean, the group's seed spread (the per-seed mean differences, pooled over its pairs) and
each pair's item part B (:mod:`pacbayes_sft.stats.seeds`). Groups are then simulated under that
normal model: per-seed bucket means μ_b + N(0, σ²/2), the item part fixed at B, and decided by the
stage's rule under each schedule (one look at ``max_seeds``, or a look at every count from 2). The
result is the expected number of decided groups per schedule and seed budget: an expectation under
a model fitted to two seeds, not a measurement.

    python experiments/seed_schedule_replay.py docs/results/decide_study --reps 300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from pacbayes_sft.racing.files import RACE_DIR
from pacbayes_sft.racing.seed_stage import bucket_rows, round_files, seed_matrix
from pacbayes_sft.stats.seeds import look_schedule, mean_squares, pair_matrix


def components(rounds_dir: Path) -> tuple[dict[str, float], float, dict[tuple[str, str], float]]:
    """Bucket means, the pooled seed spread σ of a pair's per-seed mean difference and each pair's
    item part B, from seeds 0 and 1 (the race's own)."""
    rounds = round_files(rounds_dir)
    mats = {}
    for b in rounds[0]["losses"]:
        rows = bucket_rows(rounds, b)
        mats[b] = seed_matrix({s: rows[s] for s in (0, 1)})
    spread, item = [], {}
    names = list(mats)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x = pair_matrix(mats[a], mats[b])
            s, n = x.shape
            ms_s, ms_i, ms_e = mean_squares(x)
            spread.append(ms_s / n)  # the variance of the per-seed mean differences
            item[(a, b)] = item[(b, a)] = max(ms_i - ms_e, 0.0) / (s * n)
    return {b: float(m.mean()) for b, m in mats.items()}, float(np.sqrt(np.mean(spread))), item


def decided(rng, means, sigma, item, schedule, eps, level) -> bool:
    """One simulated group under ``schedule``: the stage's rule, t on S − 1 at δ/((K − 1)L)."""
    names = list(means)
    draws = {b: means[b] + rng.normal(0, sigma / np.sqrt(2), schedule[-1]) for b in names}
    alpha, left = (1 - level) / ((len(names) - 1) * len(schedule)), list(names)
    for s in schedule:
        t = stats.t.ppf(1 - alpha, s - 1)
        iv = {}
        for a in left:
            for b in left:
                if a != b:
                    d = draws[a][:s] - draws[b][:s]
                    half = t * np.sqrt(d.var(ddof=1) / s + item[(a, b)])
                    iv[(a, b)] = (d.mean() - half, d.mean() + half)
        left = [b for b in left if not any(iv[(b, a)][0] > 0 for a in left if a != b)] or left
        if len(left) == 1 or all(iv[(a, b)][1] <= eps for a in left for b in left if a != b):
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    races = []
    for f in sorted((args.run / RACE_DIR).glob("*.json")):
        doc = json.loads(f.read_text())
        races.append((f.stem, doc["settings"], components(args.run / RACE_DIR / f.stem)))
    rng, rows = np.random.default_rng(args.seed), []
    for top in (3, 4, 5, 6):
        for name, first in (("one look", 0), ("a look at every count", 2)):
            schedule = look_schedule(2, top, first)
            per = [np.mean([decided(rng, *c, schedule, s["epsilon"], s["level"]) for _ in range(args.reps)])
                   for _, s, c in races]  # fmt: skip
            rows.append({"max_seeds": top, "schedule": name, "looks": schedule,
                         "expected_decided": round(float(np.sum(per)), 1), "groups": len(races)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    (args.run / "seed_schedule_replay.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
