#!/usr/bin/env bash
# Run a sweep as N parallel shard processes on one machine (e.g. many CPU cores sharing a GPU),
# each limited to THREADS torch threads and, optionally, SECONDS of wall time. A shard stopped
# by the limit loses only the cell it was in; rerunning resumes from the finished cells.
#   experiments/run_shards.sh CONFIG OUT N [SECONDS] [THREADS]
# For several machines, give each its own shards with `pacbayes-sft sweep --shard i/N`.
set -u
config=$1 out=$2 n=$3 seconds=${4:-0} threads=${5:-2}
py=${PYTHON:-python3}
mkdir -p "$out/logs"
pids=()
for ((i = 0; i < n; i++)); do
  limit=(); [ "$seconds" -gt 0 ] && limit=(timeout "$seconds")
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "${limit[@]}" "$py" -m pacbayes_sft.cli sweep \
    --config "$config" --out "$out" --shard "$i/$n" --quiet >"$out/logs/shard$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
echo "finished cells: $(ls "$out/cells" | wc -l)"
exit $rc
