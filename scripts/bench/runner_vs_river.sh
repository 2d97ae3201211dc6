#!/usr/bin/env bash
# Our runner against River v0.51.2, side by side (`just bench`): no-op jobs
# inserted first, then drained; ours by runner_bench's `throughput` mode,
# River's by scripts/bench/river (built here with the Go toolchain; the module
# proxy serves River's library). Each run gets a fresh database of its own;
# the two sides alternate, ours then River, RUNS times per configuration;
# the table gives each side's median and the ratio of medians.
#
# Both sides use the same clock: wall time from the runner's (client's) start
# until a count of completed rows, polled every 5 ms, reaches JOBS.
#
# Env: JOBS (20000), RUNS (3), WORKERS ("4 16 64"),
#      OURS_BEST ("RUNNERS WORKERS QUEUE" of our best configuration: one
#      process, as the issue asks), RIVER_BEST (MaxWorkers of River's best:
#      its bench's own 2000), BEST_JOBS (40000: the best configurations drain
#      20,000 jobs in about a second, of which start-up is a fair share; both
#      sides get the same count).
set -euo pipefail
cd "$(dirname "$0")/../.."

JOBS=${JOBS:-20000}
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-"4 16 64"}
OURS_BEST=${OURS_BEST:-"1 512 1024"}
RIVER_BEST=${RIVER_BEST:-2000}
BEST_JOBS=${BEST_JOBS:-40000}

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
BENCH=.stack/bench
mkdir -p "$BENCH"
ADMIN="postgres://postgres@127.0.0.1:${PG_PORT:-5433}"

cargo build --release --locked -p connectra-jobs --example runner_bench 2>&1 | tail -1 >&2
(cd scripts/bench/river && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "../../../$BENCH/river-bench" .)

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

ours() { # runners workers [queue] -> jobs/s (runner_bench makes its own fresh database)
  target/release/examples/runner_bench throughput "$JOBS" "$@"
}

river() { # max_workers -> jobs/s, in a fresh database
  psql -q -X "$ADMIN/postgres" -c "DROP DATABASE IF EXISTS bench_river WITH (FORCE)" -c "CREATE DATABASE bench_river"
  "$BENCH/river-bench" -database-url "$ADMIN/bench_river" -jobs "$JOBS" -workers "$1"
  psql -q -X "$ADMIN/postgres" -c "DROP DATABASE IF EXISTS bench_river WITH (FORCE)"
}

echo "load before: $(uptime)" >&2
echo "| configuration | ours (runs) | River (runs) | ours median | River median | ours / River |"
echo "|---|---|---|---|---|---|"
row() { # label, our args, river's workers
  local label=$1 ours_args=$2 river_w=$3 o=() r=()
  for _ in $(seq "$RUNS"); do
    # shellcheck disable=SC2086
    o+=("$(ours $ours_args)")
    r+=("$(river "$river_w")")
  done
  local om rm
  om=$(median "${o[@]}"); rm=$(median "${r[@]}")
  echo "| $label | ${o[*]} | ${r[*]} | $om | $rm | $(python3 -c "print(f'{$om / $rm:.2f}×')") |"
}
for w in $WORKERS; do
  row "1 runner × $w workers vs MaxWorkers $w" "1 $w" "$w"
done
read -r br bw bq <<<"$OURS_BEST"
JOBS=$BEST_JOBS row "best, $BEST_JOBS jobs: ours $br runner(s) × $bw workers (queue $bq) vs River MaxWorkers $RIVER_BEST" "$br $bw $bq" "$RIVER_BEST"
echo "load after: $(uptime)" >&2
