#!/usr/bin/env bash
# Import benchmark (issue 4): rows/s of insert_csv_file with the PostgreSQL
# backend and with PostgreSQL + OpenSearch, against `psql \copy` of the same
# file in the same run; and the job-runner's peak RSS for ~100 MB and ~1 GB
# files. Prints Markdown rows for docs/benchmarks.md.
#
# Env: ROWS (default 1000000), BIG_ROWS (default 6000000, ~1 GB; 0 skips).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ROWS=${ROWS:-1000000}
MID_ROWS=${MID_ROWS:-600000}
BIG_ROWS=${BIG_ROWS:-6000000}
scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
cargo build --release --locked --bin job-runner --bin api-server 2>&1 | tail -1 >&2
BENCH=.stack/bench
mkdir -p "$BENCH"
PSQL_ADMIN=(psql -q -X -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres")

calc() { python3 -c "print($1)"; }

gen() { # rows -> path (cached)
  local f="$BENCH/contacts-$1.csv"
  [ -s "$f" ] || python3 scripts/bench/gen_contacts.py "$1" > "$f"
  echo "$f"
}

upload() { # file key
  curl -fsS --aws-sigv4 "aws:amz:${S3_REGION}:s3" --user "${S3_ACCESS_KEY_ID}:${S3_SECRET_ACCESS_KEY}" \
    -H 'Content-Type: text/csv' -T "$1" "${S3_ENDPOINT}/${S3_BUCKET}/$2" >/dev/null
}

fresh_db() { # name -> url, migrated
  "${PSQL_ADMIN[@]}" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
  local url="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$1"
  DATABASE_URL="$url" API_KEYS=x RUST_LOG=warn target/release/api-server migrate
  echo "$url"
}

# run_import <db> <key> <opensearch:yes|no> -> "rows seconds peak_rss_kib"
run_import() {
  local url; url=$(fresh_db "$1")
  local os_env=(env -u OPENSEARCH_URL)
  if [ "$3" = yes ]; then
    os_env=(env OPENSEARCH_URL="$OPENSEARCH_URL")
    curl -fsS -X DELETE "$OPENSEARCH_URL/connectra_contacts,connectra_companies?ignore_unavailable=true" >/dev/null
  fi
  "${os_env[@]}" DATABASE_URL="$url" BATCH_SIZE_FOR_INSERTION="${BATCH:-5000}" RUST_LOG=warn \
    target/release/job-runner 2>"$BENCH/runner-$1.log" &
  local pid=$!
  psql -q -X "$url" -c "INSERT INTO jobs (uuid, job_type, data) VALUES (gen_random_uuid(), 'insert_csv_file', '{\"s3_key\": \"$2\"}')"
  local status=""
  while :; do
    status=$(psql -AtX "$url" -c "SELECT status FROM jobs")
    case "$status" in completed|failed) break ;; esac
    kill -0 "$pid" 2>/dev/null || { echo "job-runner died; see $BENCH/runner-$1.log" >&2; exit 1; }
    sleep 0.5
  done
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true
  [ "$status" = completed ] || { psql -AtX "$url" -c "SELECT job_response FROM jobs" >&2; exit 1; }
  psql -AtX -F ' ' "$url" -c "SELECT rows_processed, extract(epoch FROM finished_at - started_at) FROM jobs" | tr '\n' ' '
  echo "$hwm"
}

copy_baseline() { # file -> seconds
  local url; url=$(fresh_db bench_copy)
  psql -q -X "$url" -c "CREATE EXTENSION IF NOT EXISTS pgcrypto" -c "CREATE TABLE c (
      uuid uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text, first_name text, last_name text, title text,
      seniority text, departments text, phone text, linkedin_url text, email_status text,
      country text, state text, city text)"
  local t0 t1; t0=$(date +%s.%N)
  psql -q -X "$url" -c "\\copy c (email, first_name, last_name, title, seniority, departments, phone, linkedin_url, email_status, country, state, city) FROM '$1' CSV HEADER"
  t1=$(date +%s.%N)
  calc "$t1 - $t0"
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
  read -r r s rss <<<"$(run_import "bench_rss_$n" "bench/contacts-$n.csv" no)"
  echo "| peak RSS, $n rows ($(( $(stat -c %s "$f") / 1000000 )) MB), PostgreSQL backend | $((rss / 1024)) MiB ($(rate "$r" "$s") rows/s) |"
done
