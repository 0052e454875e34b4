#!/usr/bin/env bash
# The prepared GPU check: one command, within 8 minutes on one H100, everything under OUT.
#
#   bash experiments/gpu_check.sh OUT                          # on a CUDA machine
#   GPU_CHECK_DEVICE=cpu bash experiments/gpu_check.sh OUT     # the dry run on a CPU (tiny sizes)
#
# Steps, in order of what matters most; each runs under the time still left of the budget
# (GPU_CHECK_BUDGET_S: 450 s on cuda, 300 s on cpu) and is skipped when too little is left:
#   env      experiments/gpu_env.py: the machine, and the wheels in experiments/wheels unpacked
#            for what this Python lacks (submitit, pytest, ...; no network needed)  -> env.json
#   tests    the tests marked `cuda` (per-row draws, verified decoding, certificate CUDA vs CPU)
#            and the device checks of tests/test_gpu_devices.py                     -> tests.xml
#   demo     the demo sweep on the device (CPU dry run: one cell)                  -> demo/
#   compare  every demo cell against the committed CPU records: items, terms, σ_p  -> compare/
#   profile  the demo's n = 512 medium cell, phase by phase, on the device and on 2 CPU threads
#            of the same machine as the baseline (CPU dry run: one cell of the quick config,
#            its label-free answers left out)
#                                                                                  -> profile_*.json
#   timing   both profiles and the demo's recorded stages against the committed ones -> timing.md
#   scaled   a larger base pretrained here, then paper-config cells while time is left -> scaled/
# Then summary.md gathers them, steps.tsv holds each step's exit status and seconds, log.txt
# everything printed. Exit status: 0 when every step that ran passed.
set -uo pipefail

OUT=${1:?usage: bash experiments/gpu_check.sh OUT}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python}
case "$DEVICE" in
  cuda) BUDGET=${GPU_CHECK_BUDGET_S:-450}; SIZE=paper; PCONFIG=demo; PCELL=base__sft__n512__medium__s0; PTHREADS=2
        ONLY=(); ALLOW=() ;;
  cpu)  BUDGET=${GPU_CHECK_BUDGET_S:-300}; SIZE=tiny; PCONFIG=quick; PCELL=tiny__sft__n8__easy__s0; PTHREADS=1
        ONLY=(--only n=32 --only bucket=easy); ALLOW=(--allow-missing)
        export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ;;
  *) echo "GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")  # unpacked wheels: on PYTHONPATH, not in OUT
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
START=$(date +%s)
cd "$ROOT" || exit 2
exec > >(tee "$OUT/log.txt") 2>&1
printf 'step\trc\tseconds\n' > "$OUT/steps.tsv"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

step() {  # step NAME NEED CMD...: CMD under the time left, unless fewer than NEED seconds are left
  local name=$1 need=$2 t0 secs rc
  shift 2
  t0=$(date +%s); secs=$(left)
  if (( secs < need )); then
    echo "== $name: skipped ($secs s left, needs $need)"
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"
    return 0
  fi
  echo "== $name (at most $secs s)"
  timeout --kill-after=10 "$secs" "$@"
  rc=$?
  (( rc == 124 || rc == 137 )) && echo "== $name: stopped at the time limit"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
}

echo "gpu_check: device $DEVICE, budget $BUDGET s, output $OUT, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
step env 5 "$PY" experiments/gpu_env.py --site "$SITE" --out "$OUT/env.json"
step tests 30 "$PY" -m pytest -p no:cacheprovider -rsx --junitxml="$OUT/tests.xml" \
  tests/test_gpu_cuda.py tests/test_gpu_devices.py
step demo 60 "$PY" -m pacbayes_sft.cli sweep --config demo --out "$OUT/demo" "${ONLY[@]}"
step compare 5 "$PY" experiments/gpu_compare.py docs/results/demo "$OUT/demo" --out "$OUT/compare" "${ALLOW[@]}"
step profile 40 "$PY" experiments/gpu_profile.py run --config "$PCONFIG" --cell "$PCELL" --no-label-free --threads "$PTHREADS" \
  --out "$OUT/profile_$DEVICE.json"
if [[ $DEVICE == cuda ]]; then
  step profile_cpu 40 env CUDA_VISIBLE_DEVICES= "$PY" experiments/gpu_profile.py run --config "$PCONFIG" \
    --cell "$PCELL" --no-label-free --threads 2 --out "$OUT/profile_cpu.json"
fi
PROFILES=()
for p in "$OUT/profile_cpu.json" "$OUT/profile_cuda.json"; do [[ -f $p ]] && PROFILES+=(--profile "$p"); done
step timing 5 "$PY" experiments/gpu_profile.py table "${PROFILES[@]}" --reference docs/results/demo \
  --candidate "$OUT/demo" --out "$OUT/timing.md"
step scaled 20 "$PY" experiments/gpu_scaled.py --out "$OUT/scaled" --size "$SIZE" --budget-s "$(( $(left) - 10 ))"

{
  echo "# GPU check ($DEVICE), $(date -u +%FT%TZ)"
  echo
  echo "Budget $BUDGET s, used $(( $(date +%s) - START )) s. Steps (exit status, seconds):"
  echo
  echo '```'
  column -t "$OUT/steps.tsv" 2>/dev/null || cat "$OUT/steps.tsv"
  echo '```'
  echo
  echo "## Machine"
  echo
  echo '```'
  cat "$OUT/env.json" 2>/dev/null && echo || echo "no env.json"
  echo '```'
  echo
  echo "## Tests (skips and failures)"
  echo
  echo '```'
  grep -E "^(SKIPPED|FAILED|ERROR|XFAIL|XPASS)|passed|failed" "$OUT/log.txt" | grep -v "^== " | tail -40
  echo '```'
  echo
  echo "## Demo records against the committed CPU records"
  echo
  cat "$OUT/compare/compare.md" 2>/dev/null || echo "no comparison (the demo step did not finish)"
  echo
  echo "## Timing"
  echo
  cat "$OUT/timing.md" 2>/dev/null || echo "no timing table"
  echo
  echo "## Scaled cells"
  echo
  echo '```'
  cat "$OUT/scaled/summary.json" 2>/dev/null && echo || echo "no scaled cells"
  echo '```'
} > "$OUT/summary.md"
rm -rf "$SITE"
echo "gpu_check: done in $(( $(date +%s) - START )) s; summary in $OUT/summary.md"
awk -F'\t' 'NR > 1 && $2 != "0" && $2 != "skipped" { bad = 1 } END { exit bad }' "$OUT/steps.tsv"
