#!/usr/bin/env bash
# Runs every check and test of the workspace against the real local stack
# (PostgreSQL, SeaweedFS S3, OpenSearch), installing and starting whatever is missing.
# Then the end-to-end run of the three binaries over HTTP (scripts/e2e.sh).
# This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/stack.sh up
eval "$(scripts/stack.sh env)"

# Python tools the tests call (Prometheus's reference parser), in a venv of the project's own
VENV=.stack/venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import prometheus_client" 2>/dev/null \
  || "$VENV/bin/python" -m pip install --quiet prometheus-client
export CONNECTRA_PYTHON="$PWD/$VENV/bin/python"

scripts/lint_docker.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/fuzz_api.sh
# the dashboard in a real browser (headless Chromium, selenium)
scripts/browser_test.sh
scripts/e2e.sh
# last: it stops and restarts the shared services
scripts/chaos.sh
