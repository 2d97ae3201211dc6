#!/usr/bin/env bash
# Import benchmark (issue 4): rows/s of insert_csv_file with the PostgreSQL
# backend and with PostgreSQL + OpenSearch, against `psql \copy` of the same
# file in the same run; and the job-runner's peak RSS for ~100 MB and ~1 GB
# files. Prints Markdown rows for docs/benchmarks.md.
#
# The BIG_ROWS import is sampled every 0.5 s (rows processed, RSS) and drawn
# as docs/import-1gb.svg (crates/jobs/examples/bench_chart.rs).
#
# Env: ROWS (default 1000000), BIG_ROWS (default 6000000, ~1 GB; 0 skips).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ROWS=${ROWS:-1000000}
MID_ROWS=${MID_ROWS:-600000}
BIG_ROWS=${BIG_ROWS:-6000000}
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh

# run_import <db> <key> <opensearch:yes|no> -> "rows seconds peak_rss_kib"
run_import() {
  local url; url=$(fresh_db "$1")
  run_job "$url" insert_csv_file "{\"s3_key\": \"$2\"}" "$3"
}

main_file=$(gen "$ROWS"); upload "$main_file" "bench/contacts-$ROWS.csv"
size_mb=$(( $(stat -c %s "$main_file") / 1000000 ))
copy_s=$(copy_baseline "$main_file")
read -r pg_rows pg_s pg_rss <<<"$(run_import bench_pg "bench/contacts-$ROWS.csv" no)"
read -r os_rows os_s os_rss <<<"$(run_import bench_os "bench/contacts-$ROWS.csv" yes)"
rate() { calc "round($1 / $2)"; }
copy_rate=$(rate "$ROWS" "$copy_s")
echo "| file | $ROWS contact rows, $size_mb MB |"
echo "|---|---|"
echo "| \`psql \\copy\` into an equivalent table (uuid primary key) | $(printf '%.1f' "$copy_s") s, $copy_rate rows/s (100 %) |"
echo "| import, PostgreSQL backend | $(printf '%.1f' "$pg_s") s, $(rate "$pg_rows" "$pg_s") rows/s ($(calc "round(100 * $pg_rows / $pg_s / $copy_rate)") % of \\copy), peak RSS $((pg_rss / 1024)) MiB |"
echo "| import, PostgreSQL + OpenSearch | $(printf '%.1f' "$os_s") s, $(rate "$os_rows" "$os_s") rows/s ($(calc "round(100 * $os_rows / $os_s / $copy_rate)") % of \\copy), peak RSS $((os_rss / 1024)) MiB |"

for n in "$MID_ROWS" "$BIG_ROWS"; do
  [ "$n" -gt 0 ] || continue
  f=$(gen "$n"); upload "$f" "bench/contacts-$n.csv"
  samples=""
  [ "$n" != "$BIG_ROWS" ] || samples="$BENCH/samples-$n.csv"
  read -r r s rss <<<"$(SAMPLES=$samples run_import "bench_rss_$n" "bench/contacts-$n.csv" no)"
  if [ -n "$samples" ]; then
    cargo run --locked -q -p connectra-jobs --features builtin --example bench_chart -- "$samples" docs/import-1gb.svg \
      "import of $n contacts ($(( $(stat -c %s "$f") / 1000000 )) MB), PostgreSQL backend, batch ${BATCH:-5000}" >&2
  fi
  echo "| peak RSS, $n rows ($(( $(stat -c %s "$f") / 1000000 )) MB), PostgreSQL backend | $((rss / 1024)) MiB ($(rate "$r" "$s") rows/s) |"
done
