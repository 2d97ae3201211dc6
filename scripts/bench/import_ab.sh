#!/usr/bin/env bash
# Compares two job-runner builds side by side in one run: the same file
# imported (PostgreSQL + OpenSearch unless OPENSEARCH=no) by A, B, A, B, each
# into a fresh database; prints rows/s and peak RSS of each run.
#
# Usage: scripts/bench/import_ab.sh <job-runner A> <job-runner B>
# Env: ROWS (default 1000000), BATCH (default 5000), OPENSEARCH (yes|no).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <job-runner A> <job-runner B>" >&2; exit 2; }
a=$(realpath "$1"); b=$(realpath "$2")
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
ROWS=${ROWS:-1000000}
f=$(gen "$ROWS"); upload "$f" "bench/contacts-$ROWS.csv"
echo "| run | build | rows/s | peak RSS |"
echo "|---|---|---|---|"
n=0
for pair in "A $a" "B $b" "A $a" "B $b"; do
  read -r name bin <<<"$pair"
  n=$((n + 1))
  url=$(fresh_db "bench_ab_$n")
  read -r rows secs rss <<<"$(RUNNER_BIN=$bin run_job "$url" insert_csv_file \
    "{\"s3_key\": \"bench/contacts-$ROWS.csv\"}" "${OPENSEARCH:-yes}")"
  echo "| $n | $name | $(calc "round($rows / $secs)") | $((rss / 1024)) MiB |"
done
