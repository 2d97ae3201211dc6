# syntax=docker/dockerfile:1
# Connectra Jobs: api-server, job-runner, retry-runner and the connectra CLI in one
# small image. `docker compose up` builds it (compose.yaml: `build: .`).

# ---- build ------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# Dependencies first, in a layer of their own: the manifests and stub sources
# only, so this layer is rebuilt only when Cargo.toml or Cargo.lock change.
# Every target a manifest declares gets an empty stub (the [[test]]s too).
COPY Cargo.toml Cargo.lock ./
COPY crates/api/Cargo.toml crates/api/
COPY crates/config/Cargo.toml crates/config/
COPY crates/domain/Cargo.toml crates/domain/
COPY crates/jobs/Cargo.toml crates/jobs/
COPY crates/persistence/Cargo.toml crates/persistence/
COPY crates/search/Cargo.toml crates/search/
COPY crates/storage/Cargo.toml crates/storage/
COPY bins/api-server/Cargo.toml bins/api-server/
COPY bins/job-runner/Cargo.toml bins/job-runner/
COPY bins/retry-runner/Cargo.toml bins/retry-runner/
COPY bins/connectra/Cargo.toml bins/connectra/
RUN set -eu; \
    for c in api config domain jobs persistence search storage; do \
      mkdir -p "crates/$c/src"; echo '' > "crates/$c/src/lib.rs"; touch "crates/$c/README.md"; \
    done; \
    for b in api-server job-runner retry-runner connectra; do \
      mkdir -p "bins/$b/src"; echo 'fn main() {}' > "bins/$b/src/main.rs"; \
    done; \
    mkdir -p crates/jobs/src/bin/demo-runner && echo 'fn main() {}' > crates/jobs/src/bin/demo-runner/main.rs; \
    for m in crates/*/Cargo.toml; do \
      awk '/^\[\[test\]\]/ {t=1; next} t && /^name/ {gsub(/"/, "", $3); print $3; t=0}' "$m" \
      | while read -r t; do mkdir -p "$(dirname "$m")/tests" && touch "$(dirname "$m")/tests/$t.rs"; done; \
    done
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked \
      -p api-server -p job-runner -p retry-runner -p connectra

# Then the sources: only our own crates are compiled again.
COPY crates crates
COPY bins bins
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    find crates bins -name '*.rs' -exec touch {} + \
    && cargo build --release --locked \
      -p api-server -p job-runner -p retry-runner -p connectra \
    && mkdir -p /out \
    && cp target/release/api-server target/release/job-runner \
          target/release/retry-runner target/release/connectra /out/

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# TLS roots for https endpoints (S3, OpenSearch); nothing else is needed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin connectra
COPY --from=builder /out/ /usr/local/bin/
USER 10001
ENV HTTP_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
CMD ["/usr/local/bin/api-server"]
