#!/usr/bin/env bash
# Schemathesis (PyPI) against a live api-server on the real stack: every
# operation of GET /openapi.json, with every check (status codes, response
# schemas, no 5xx, schema-valid requests accepted, schema-violating ones
# refused), a bounded number of examples and a fixed seed, so that a run takes
# about two minutes and a failure can be replayed. Settings and the named
# exceptions: scripts/schemathesis.toml. Stops what it started (by PID).
#
# Env: FUZZ_PORT (18099), FUZZ_EXAMPLES (15), FUZZ_SEED (1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
VENV=.stack/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import schemathesis" 2>/dev/null \
  || "$VENV/bin/python" -m pip install --quiet 'schemathesis>=4.3,<5'
cargo build --locked --bin api-server 2>&1 | tail -1

PORT=${FUZZ_PORT:-18099}
DB="connectra_fuzz_$$"
ADMIN="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/postgres"
export HTTP_ADDR="127.0.0.1:$PORT" API_KEYS=fuzz-key RUST_LOG=warn
export DATABASE_URL="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$DB"
export OPENSEARCH_INDEX_PREFIX="fuzz_$$"
LOG=$(mktemp)
PID=""
cleanup() {
  [ -z "$PID" ] || { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  psql -qX "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  if [ -n "${OPENSEARCH_URL:-}" ]; then
    curl -fsS -X DELETE "${OPENSEARCH_URL%%,*}/${OPENSEARCH_INDEX_PREFIX}_*?ignore_unavailable=true" >/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT
psql -qX "$ADMIN" -c "CREATE DATABASE $DB"
target/debug/api-server 2>"$LOG" & PID=$!
for _ in $(seq 1 100); do curl -fs "127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

status=0
"$VENV/bin/st" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
  -H "X-API-Key: fuzz-key" --checks all --max-examples "${FUZZ_EXAMPLES:-15}" \
  --seed "${FUZZ_SEED:-1}" --workers 2 --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz_api: schemathesis found failures (above); api-server log:" >&2
  tail -n 30 "$LOG" >&2
fi
exit "$status"
