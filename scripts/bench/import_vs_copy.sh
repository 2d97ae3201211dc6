#!/usr/bin/env bash
# Import speed against `psql \copy` (issue 13, item 1): the same file of
# ROWS contacts loaded by `\copy` into an equivalent table and imported by a
# real release job-runner with the guide's defaults (BATCH_SIZE_FOR_INSERTION
# 500, PostgreSQL only), alternating, RUNS times each, a fresh database
# every run. Prints a Markdown table with medians and the ratio.
#
# Env: ROWS (default 300000), RUNS (default 3), BATCH (default 500),
# RUNNER_BIN (another job-runner build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
ROWS=${ROWS:-300000}
RUNS=${RUNS:-3}
export BATCH=${BATCH:-500}
f=$(gen "$ROWS"); upload "$f" "bench/contacts-$ROWS.csv"
copy_rates=(); import_rates=()
echo "| run | load before | \`psql \\copy\` | import (batch $BATCH, PostgreSQL only) | ratio |"
echo "|---|---|---|---|---|"
for i in $(seq 1 "$RUNS"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  c=$(copy_baseline "$f")
  url=$(fresh_db bench_vs_copy)
  read -r rows secs _rss <<<"$(run_job "$url" insert_csv_file "{\"s3_key\": \"bench/contacts-$ROWS.csv\"}" no)"
  [ "$rows" -eq "$ROWS" ] || { echo "imported $rows rows, not $ROWS" >&2; exit 1; }
  cr=$(calc "round($ROWS / $c)"); ir=$(calc "round($rows / $secs)")
  copy_rates+=("$cr"); import_rates+=("$ir")
  echo "| $i | $load | $(printf '%.2f' "$c") s, $cr rows/s | $(printf '%.2f' "$secs") s, $ir rows/s | $(calc "round(100 * $ir / $cr)") % |"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mc=$(median "${copy_rates[@]}"); mi=$(median "${import_rates[@]}")
echo "| median | | $mc rows/s | $mi rows/s | $(calc "round(100 * $mi / $mc)") % |"
