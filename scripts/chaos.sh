#!/usr/bin/env bash
# Chaos: each case imports CHAOS_ROWS (default 300,000) contacts with
# retry_count 5 through api-server, job-runner and retry-runner (separate
# processes, as in scripts/e2e.sh), injects one fault mid-import, and checks
# that the job completed with exactly the file's rows and that PostgreSQL and
# OpenSearch hold the same uuid set.
#
# Cases (CHAOS_CASES, comma-separated; default all):
#   pg_restart   PostgreSQL stopped (-m fast) and started again
#   os_pause     OpenSearch frozen with SIGSTOP for 25 s, then SIGCONT
#   os_kill      OpenSearch killed (SIGKILL) and started again
#   s3_export    S3 stopped for a few seconds in the middle of an export of
#                every imported row; the export must end with every row, or
#                fail cleanly with no object
#
# Run by scripts/test.sh after the other tests, since it stops the shared
# services. Stops everything it started (by PID) on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
[ -n "${OPENSEARCH_URL:-}" ] || { echo "chaos: needs OpenSearch (OPENSEARCH_URL)" >&2; exit 1; }
cargo build --locked --bin api-server --bin job-runner --bin retry-runner 2>&1 | tail -1

ROWS=${CHAOS_ROWS:-300000}
CASES=${CHAOS_CASES:-pg_restart,os_pause,os_kill,s3_export}
WORK=$(mktemp -d)
PORT=${CHAOS_PORT:-18091}
PG_ADMIN="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres"
python3 scripts/bench/gen_contacts.py "$ROWS" > "$WORK/contacts.csv"
export HTTP_ADDR="127.0.0.1:$PORT" API_KEYS=chaos-key TICKER_INTERVAL_SECONDS=2 RUST_LOG=warn \
  JOB_LEASE_SECONDS=10 BATCH_SIZE_FOR_INSERTION=2000
API="http://127.0.0.1:$PORT"
H=(-H "X-API-Key: chaos-key")
J=(-H "Content-Type: application/json")
PIDS=()
DB=""

stop_processes() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
drop_case() {
  [ -n "$DB" ] || return 0
  psql -qX "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  curl -fsS -X DELETE "$OPENSEARCH_URL/${OPENSEARCH_INDEX_PREFIX}_contacts,${OPENSEARCH_INDEX_PREFIX}_contacts_v*,${OPENSEARCH_INDEX_PREFIX}_companies,${OPENSEARCH_INDEX_PREFIX}_companies_v*?ignore_unavailable=true" >/dev/null 2>&1 || true
  DB=""
}
cleanup() {
  stop_processes
  # a case that failed midway may have left a service stopped or frozen
  [ -f .stack/opensearch.pid ] && kill -CONT "$(cat .stack/opensearch.pid)" 2>/dev/null || true
  scripts/stack.sh up >/dev/null 2>&1 || true
  drop_case
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { printf "chaos: %b\n" "$*" >&2; tail -n 30 "$WORK"/*.log >&2 || true; exit 1; }
job_field() { # uuid python-expression -> value, or empty while the API cannot answer
  curl -fsS --max-time 5 "${H[@]}" "$API/common/jobs/$1" 2>/dev/null \
    | python3 -c "import json,sys; d=json.load(sys.stdin)['data']; print($2)" 2>/dev/null || true
}
os_pid() { cat .stack/opensearch.pid; }

inject() {
  case "$1" in
    pg_restart)
      scripts/stack.sh down pg >/dev/null
      sleep 2
      scripts/stack.sh up pg >/dev/null ;;
    os_pause)
      kill -STOP "$(os_pid)"
      sleep 25
      kill -CONT "$(os_pid)" ;;
    os_kill)
      kill -KILL "$(os_pid)"
      while kill -0 "$(os_pid)" 2>/dev/null; do sleep 0.2; done
      scripts/stack.sh up opensearch >/dev/null ;;
    s3_export)
      scripts/stack.sh down s3 >/dev/null
      sleep 3
      scripts/stack.sh up s3 >/dev/null ;;
    none) ;;
    *) fail "unknown case $1" ;;
  esac
}

run_job() { # case body fault -> uuid of the completed job
  local name=$1 body=$2 fault=$3 uuid done_rows=0 status=""
  uuid=$(curl -fsS "${H[@]}" "${J[@]}" -X POST "$API/common/jobs/create" -d "$body" \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['data']['uuid'])")
  if [ "$fault" != none ]; then
    # mid-job: once a fifth of the rows are done
    for _ in $(seq 1 3000); do
      done_rows=$(job_field "$uuid" "d['rows_processed']")
      [ "${done_rows:-0}" -ge $((ROWS / 5)) ] && break
      [ "$(job_field "$uuid" "d['status']")" = completed ] && fail "$name: the job ended before the fault"
      sleep 0.1
    done
    echo "chaos: $name: injecting at $done_rows rows" >&2
    inject "$fault"
  fi
  for _ in $(seq 1 1800); do
    status=$(job_field "$uuid" "d['status']")
    [ "$status" = completed ] && break
    [ "$status" = failed ] && [ "$(job_field "$uuid" "d['run_after']")" = None ] && break
    sleep 0.5
  done
  echo "$uuid $status"
}

run_case() {
  local name=$1 started
  started=$(date +%s)
  DB="connectra_chaos_${name}_$$"
  psql -qX "$PG_ADMIN" -c "CREATE DATABASE $DB"
  export DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$DB"
  export OPENSEARCH_INDEX_PREFIX="chaos_${name}_$$"
  target/debug/api-server 2>"$WORK/$name-api.log" & PIDS+=($!)
  for _ in $(seq 1 100); do curl -fs "$API/health" >/dev/null && break; sleep 0.1; done
  target/debug/job-runner 2>"$WORK/$name-job-runner.log" & PIDS+=($!)
  target/debug/retry-runner 2>"$WORK/$name-retry-runner.log" & PIDS+=($!)

  local up url key uuid
  up=$(curl -fsS "${H[@]}" "$API/common/upload-url?filename=chaos-$name.csv")
  url=$(echo "$up" | python3 -c "import json,sys; print(json.load(sys.stdin)['upload_url'])")
  key=$(echo "$up" | python3 -c "import json,sys; print(json.load(sys.stdin)['s3_key'])")
  curl -fsS -X PUT -H 'Content-Type: text/csv' --upload-file "$WORK/contacts.csv" "$url" >/dev/null
  local fault=$name
  [ "$name" = s3_export ] && fault=none
  uuid=$(run_job "$name" "{\"job_type\": \"insert_csv_file\", \"job_data\": {\"s3_key\": \"$key\"}, \"retry_count\": 5, \"retry_interval\": 1}" "$fault")
  local status
  read -r uuid status <<<"$uuid"
  [ "$status" = completed ] || fail "$name: the import did not complete: $(curl -s "${H[@]}" "$API/common/jobs/$uuid")"
  local rows attempts
  rows=$(job_field "$uuid" "d['rows_processed']")
  attempts=$(job_field "$uuid" "d['attempts']")
  [ "$rows" = "$ROWS" ] || fail "$name: rows_processed $rows, the file has $ROWS"
  curl -fsS -X POST "$OPENSEARCH_URL/${OPENSEARCH_INDEX_PREFIX}_contacts/_refresh" >/dev/null
  psql -qAtX "$DATABASE_URL" -c "SELECT uuid FROM contacts" > "$WORK/pg.txt"
  python3 - "$OPENSEARCH_URL/${OPENSEARCH_INDEX_PREFIX}_contacts/_search" "$WORK/pg.txt" "$ROWS" <<'PY' || fail "$name: the stores differ"
import json, sys, urllib.request
url, pg_file, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
pg = set(open(pg_file).read().split())
os_ids, after = set(), None
while True:
    body = {"size": 10000, "_source": False, "sort": [{"uuid": "asc"}]}
    if after:
        body["search_after"] = after
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    hits = json.load(urllib.request.urlopen(req, timeout=60))["hits"]["hits"]
    if not hits:
        break
    os_ids.update(h["_id"] for h in hits)
    after = hits[-1]["sort"]
if len(pg) != rows or pg != os_ids:
    print(f"postgres {len(pg)} uuids, opensearch {len(os_ids)}; only in postgres {len(pg - os_ids)}, "
          f"only in opensearch {len(os_ids - pg)}", file=sys.stderr)
    sys.exit(1)
PY
  if [ "$name" = s3_export ]; then
    local export status_e
    export=$(run_job "$name" '{"job_type": "export_csv_file", "retry_count": 5, "retry_interval": 1, "job_data": {"service": "contact", "vql": {"select_columns": ["uuid", "email", "first_name", "last_name", "title", "country", "city"]}}}' s3_export)
    read -r export status_e <<<"$export"
    attempts=$(job_field "$export" "d['attempts']")
    local object="$S3_BUCKET/$(job_field "$export" "d['job_response'].get('s3_key') or 'uploads/' + d['uuid'] + '.csv'")"
    if [ "$status_e" = completed ]; then
      local dl
      dl=$(curl -fsS "${H[@]}" "$API/common/jobs/$export/download-url" | python3 -c "import json,sys; print(json.load(sys.stdin)['download_url'])")
      local lines
      lines=$(curl -fsS "$dl" | python3 -c "import csv,sys; print(sum(1 for _ in csv.reader(sys.stdin)))")
      [ "$lines" = $((ROWS + 1)) ] || fail "$name: the export holds $lines lines, want $((ROWS + 1))"
      echo "chaos: $name: the export completed after $attempts attempt(s) with all $ROWS rows ($(( $(date +%s) - started )) s)" >&2
    else
      # failed for good: all or nothing, so no object
      local code
      code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:${S3_REGION:-us-east-1}:s3" \
        --user "$S3_ACCESS_KEY_ID:$S3_SECRET_ACCESS_KEY" -I "$S3_ENDPOINT/$object")
      [ "$code" = 404 ] || fail "$name: a failed export left $object (HTTP $code)"
      echo "chaos: $name: the export failed cleanly after $attempts attempt(s), no object ($(( $(date +%s) - started )) s)" >&2
    fi
  else
    echo "chaos: $name: completed after $attempts attempt(s), $ROWS rows in both stores ($(( $(date +%s) - started )) s)" >&2
  fi
  stop_processes
  drop_case
}

passed=0
IFS=, read -ra wanted <<<"$CASES"
for c in "${wanted[@]}"; do
  run_case "$c"
  passed=$((passed + 1))
done
echo "chaos: $passed passed, 0 failed"
