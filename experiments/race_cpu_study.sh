#!/usr/bin/env bash
# Race the CPU study's undetermined (base, objective, n) groups on fresh test problems, cheapest
# first: the replay's predicted items (experiments/race_replay.py) plus retraining 12 cells, which
# grows with n (about 12 x 3 epochs x n examples). Time-uniform betting
# confidence sequences, epsilon = 0.02 in answer error, 95%, rounds of 200 items, a 40,000-item cap.
# The study kept no adapters: each group's 12 cells are retrained from their seeds (data-free
# prior, as the study trained them) into docs/results/cpu_study/adapters (not committed).
# Every finished round is a small JSON file under docs/results/cpu_study/race/: commit them; a
# rerun replays them and goes on, so stopping this script loses at most the round in progress.
#   experiments/race_cpu_study.sh [GROUP ...]     (default: the 14 undetermined groups, cheapest first)
set -u
run=${RUN:-docs/results/cpu_study}
py=${PYTHON:-.venv/bin/python}
groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then
  groups=(weak/sft/512 strong/sft/128 strong/dft/32 strong/sft/32 weak/dft/32 strong/dft/128 weak/sft/2048
          weak/dft/2048 strong/dft/2048 weak/dft/4096 strong/sft/512 weak/sft/4096 strong/sft/2048 strong/sft/4096)
fi
mkdir -p "$run/logs"
for g in "${groups[@]}"; do
  echo "$(date -u +%FT%TZ) start $g"
  OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 "$py" -m pacbayes_sft.cli race --run "$run" --group "$g" \
    --epsilon 0.02 --level 0.95 --round-items 200 --max-items 40000 --confidence betting || exit $?
done
