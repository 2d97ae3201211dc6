# Shared by the benchmark scripts: the stack, release binaries, generated
# files in .stack/bench, fresh databases, and running one job in a real
# job-runner process while sampling its peak RSS.
# shellcheck shell=bash

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

fresh_db() { # name -> url, migrated; its OpenSearch indices (prefix = name) are dropped too
  "${PSQL_ADMIN[@]}" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
  curl -fsS -X DELETE "${OPENSEARCH_URL%%,*}/$1_contacts,$1_contacts_v*,$1_companies,$1_companies_v*?ignore_unavailable=true" >/dev/null
  local url="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$1"
  DATABASE_URL="$url" API_KEYS=x RUST_LOG=warn target/release/api-server migrate
  echo "$url"
}

# run_job <db-url> <job_type> <job_data json> <opensearch:yes|no> -> "rows seconds peak_rss_kib"
# RUNNER_BIN picks another job-runner binary (to compare two builds in one run).
# SAMPLES=<file> records "t_s,rows_processed,rss_kib" every 0.5 s while it runs.
run_job() {
  local url=$1
  local os_env=(env -u OPENSEARCH_URL)
  if [ "$4" = yes ]; then
    os_env=(env OPENSEARCH_URL="$OPENSEARCH_URL")
  fi
  local log; log="$BENCH/runner-$(basename "$url")-$2.log"
  "${os_env[@]}" DATABASE_URL="$url" OPENSEARCH_INDEX_PREFIX="$(basename "$url")" \
    BATCH_SIZE_FOR_INSERTION="${BATCH:-5000}" RUST_LOG=warn "${RUNNER_BIN:-target/release/job-runner}" 2>"$log" &
  local pid=$!
  psql -q -X "$url" -c "DELETE FROM jobs" -c "INSERT INTO jobs (uuid, job_type, data) VALUES (gen_random_uuid(), '$2', '$3')"
  local status="" t0; t0=$(date +%s.%N)
  [ -z "${SAMPLES:-}" ] || echo "t_s,rows_processed,rss_kib" >"$SAMPLES"
  while :; do
    if [ -n "${SAMPLES:-}" ]; then
      local now rows rss
      now=$(date +%s.%N)
      read -r status rows <<<"$(psql -AtX -F ' ' "$url" -c "SELECT status, rows_processed FROM jobs")"
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
      echo "$(calc "round($now - $t0, 2)"),$rows,$rss" >>"$SAMPLES"
    else
      status=$(psql -AtX "$url" -c "SELECT status FROM jobs")
    fi
    case "$status" in completed|failed) break ;; esac
    kill -0 "$pid" 2>/dev/null || { echo "job-runner died; see $log" >&2; exit 1; }
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

