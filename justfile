# Connectra Jobs. `just --list` shows the recipes.

# Start PostgreSQL and S3 on loopback (installs what is missing)
up:
    scripts/stack.sh up

# Stop exactly what `up` started
down:
    scripts/stack.sh down

status:
    scripts/stack.sh status

# The whole service in one process (API + both runners)
run:
    scripts/run.sh

# Every check and test, against the real stack (what CI runs)
test:
    scripts/test.sh

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run migrations against DATABASE_URL
migrate:
    scripts/stack.sh up
    eval "$(scripts/stack.sh env)" && cargo run --bin api-server -- migrate

job-runner:
    eval "$(scripts/stack.sh env)" && cargo run --bin job-runner

retry-runner:
    eval "$(scripts/stack.sh env)" && cargo run --bin retry-runner

# The three binaries as separate processes, driven over HTTP with curl
e2e:
    scripts/e2e.sh

# Benchmarks (release build, real stack, peers installed by the scripts);
# figures go to docs/benchmarks.md (PARTS=... runs a subset; see scripts/bench/all.sh)
bench:
    scripts/bench/all.sh
