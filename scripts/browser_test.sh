#!/usr/bin/env bash
# The dashboard (/ui) in a real browser: headless Chromium driven by selenium
# (scripts/ui_test.py) against an api-server, job-runner
# and retry-runner (debug builds), with its own database on the stack's PostgreSQL and its own
# OpenSearch index prefix. Installs chromium and chromium-driver with apt-get
# when missing, and selenium into the project's venv. Screenshots go to
# target/ui-screenshots/. Stops what it started (by PID) on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }
fi

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
VENV=${STACK_DIR:-.stack}/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import selenium" 2>/dev/null || "$VENV/bin/python" -m pip install --quiet selenium
cargo build --locked --bin api-server --bin job-runner --bin retry-runner 2>&1 | tail -1

WORK=$(mktemp -d)
PORT=${UI_PORT:-18200}
PG_ADMIN="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres"
UI_DB="connectra_ui_$$"
psql -qX "$PG_ADMIN" -c "CREATE DATABASE $UI_DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$UI_DB"
export OPENSEARCH_INDEX_PREFIX="ui_$$"
export HTTP_ADDR="127.0.0.1:$PORT" API_KEYS=ui-browser-key TICKER_INTERVAL_SECONDS=1 RUST_LOG=warn
# small batches, so a 60 MB import runs long enough to watch its bar move
export BATCH_SIZE_FOR_INSERTION=${UI_BATCH_SIZE:-200}
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -qX "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $UI_DB WITH (FORCE)" >/dev/null || true
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

# the big file, uploaded through the API's presigned URL
python3 scripts/bench/gen_contacts.py "${UI_BIG_ROWS:-300000}" > "$WORK/big.csv"
up=$(curl -fsS -H "X-API-Key: ui-browser-key" "127.0.0.1:$PORT/common/upload-url?filename=ui-big.csv")
BIG_KEY=$(echo "$up" | python3 -c 'import json,sys; print(json.load(sys.stdin)["s3_key"])')
url=$(echo "$up" | python3 -c 'import json,sys; print(json.load(sys.stdin)["upload_url"])')
curl -fsS -X PUT -H 'Content-Type: text/csv' --upload-file "$WORK/big.csv" "$url" >/dev/null

mkdir -p target/ui-screenshots
UI_BASE="http://127.0.0.1:$PORT" UI_KEY=ui-browser-key UI_BIG_KEY="$BIG_KEY" \
UI_BAD_LINES=examples/bad_lines.csv UI_SHOTS=target/ui-screenshots \
  "$VENV/bin/python" scripts/ui_test.py \
  || { echo "browser_test: failed; the servers' last log lines:" >&2; tail -n 20 "$WORK"/*.log >&2; exit 1; }
echo "browser_test: screenshots in target/ui-screenshots/"
