#!/usr/bin/env bash
# Runs the whole service in one process against the local stack: the Jobs API
# on HTTP_ADDR (default 127.0.0.1:8080) with both runners in-process.
# Installs and starts the stack first if needed. API key: dev-key.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up
eval "$(scripts/stack.sh env)"
export RUN_JOBS_IN_PROCESS="${RUN_JOBS_IN_PROCESS:-true}"
export TICKER_INTERVAL_SECONDS="${TICKER_INTERVAL_SECONDS:-30}"
exec cargo run --locked --bin api-server
