#!/usr/bin/env bash
# End to end, as a user would run it: the local stack, then api-server,
# job-runner and retry-runner as separate processes, driven through the HTTP
# API with curl alone. Stops everything it started (by PID) on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
cargo build --locked --bin api-server --bin job-runner --bin retry-runner 2>&1 | tail -1

WORK=$(mktemp -d)
PORT=${E2E_PORT:-18089}
export HTTP_ADDR="127.0.0.1:$PORT" API_KEYS=e2e-key TICKER_INTERVAL_SECONDS=5 RUST_LOG=warn
# a database of its own, so the run starts from nothing
E2E_DB="connectra_e2e_$$"
psql -qX "postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres" -c "CREATE DATABASE $E2E_DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$E2E_DB"
export OPENSEARCH_INDEX_PREFIX="e2e_$$"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -qX "postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres" -c "DROP DATABASE IF EXISTS $E2E_DB WITH (FORCE)" || true
  if [ -n "${OPENSEARCH_URL:-}" ]; then
    curl -fsS -X DELETE "$OPENSEARCH_URL/${OPENSEARCH_INDEX_PREFIX}_contacts,${OPENSEARCH_INDEX_PREFIX}_contacts_v*,${OPENSEARCH_INDEX_PREFIX}_companies,${OPENSEARCH_INDEX_PREFIX}_companies_v*?ignore_unavailable=true" >/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

target/debug/api-server 2>"$WORK/api.log" & PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
target/debug/job-runner 2>"$WORK/job-runner.log" & PIDS+=($!)
target/debug/retry-runner 2>"$WORK/retry-runner.log" & PIDS+=($!)

API="http://127.0.0.1:$PORT"
H=(-H "X-API-Key: e2e-key")
J=(-H "Content-Type: application/json")
fail() { printf "e2e: %b\n" "$*" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

wait_job() { # uuid -> final status
  for _ in $(seq 1 600); do
    local s; s=$(curl -fsS "${H[@]}" "$API/common/jobs/$1" | field "['data']['status']")
    case "$s" in completed|failed) echo "$s"; return ;; esac
    sleep 0.2
  done
  fail "job $1 did not finish"
}

# 1. upload a CSV through a presigned URL
cat > "$WORK/contacts.csv" <<'CSV'
First Name,Last Name,Email,Title,Country,Company Name,Company Website
Ann,Lee,ann@acme.io,CTO,USA,Acme,https://acme.io
Bob,Ray,bob@acme.io,Engineer,USA,Acme,https://acme.io
Zoë,Ōtsuka,zoe@globex.com,"Head of R&D, Europe",Germany,Globex,globex.com
CSV
up=$(curl -fsS "${H[@]}" "$API/common/upload-url?filename=contacts.csv")
url=$(echo "$up" | field "['upload_url']"); key=$(echo "$up" | field "['s3_key']")
curl -fsS -X PUT -H 'Content-Type: text/csv' --upload-file "$WORK/contacts.csv" "$url" >/dev/null

# 2. import it
created=$(curl -fsS "${H[@]}" "${J[@]}" -X POST "$API/common/jobs/create" \
  -d "{\"job_type\": \"insert_csv_file\", \"job_data\": {\"s3_key\": \"$key\"}, \"retry_count\": 1}")
import_uuid=$(echo "$created" | field "['data']['uuid']")
[ "$(wait_job "$import_uuid")" = completed ] || fail "import failed: $(curl -s "${H[@]}" "$API/common/jobs/$import_uuid")"

# 3. export the USA contacts
created=$(curl -fsS "${H[@]}" "${J[@]}" -X POST "$API/common/jobs/create" -d '{"job_type": "export_csv_file",
  "job_data": {"service": "contact", "vql": {"where": {"keyword_match": {"must": {"country": ["usa"]}}},
  "select_columns": ["email", "first_name", "title"], "order_by": [{"order_by": "email", "order_direction": "asc"}]}}}')
export_uuid=$(echo "$created" | field "['data']['uuid']")
[ "$(wait_job "$export_uuid")" = completed ] || fail "export failed: $(curl -s "${H[@]}" "$API/common/jobs/$export_uuid")"

# 4. download it and check the content
dl=$(curl -fsS "${H[@]}" "$API/common/jobs/$export_uuid/download-url" | field "['download_url']")
curl -fsS "$dl" > "$WORK/export.csv"
expected=$'email,first_name,title\nann@acme.io,Ann,CTO\nbob@acme.io,Bob,Engineer'
[ "$(cat "$WORK/export.csv")" = "$expected" ] || fail "unexpected export:\n$(cat "$WORK/export.csv")"

# 5. the list shows both jobs completed
n=$(curl -fsS "${H[@]}" "${J[@]}" -X POST "$API/common/jobs" -d '{"status": ["completed"]}' | field "['data'].__len__()")
[ "$n" = 2 ] || fail "expected 2 completed jobs, listed $n"
echo "e2e: 1 passed, 0 failed"
