#!/usr/bin/env bash
# Export against elasticdump: ROWS contacts loaded once by our import (with
# OpenSearch) into the index bench_edump_contacts, then dumped by our export
# job (a real job-runner, CSV to S3; rows/s from the job's own started_at ..
# finished_at) and by elasticdump (npm elasticdump@6.125.1, the same 7
# columns as `_source` includes, `--sourceOnly`, one JSON document a line into
# a local file; rows/s from the whole process, wall clock, and its line count,
# which must be ROWS). Comparisons, each RUNS times, ours then elasticdump
# within each run:
#   sorted:     ours with order_by uuid asc, pages of 500 | elasticdump
#               --searchAfter --pit (point in time + search_after), sort uuid
#               asc (our sort field for uuid, a keyword), --limit=500
#   unsorted:   ours without order_by, pages of 500 | elasticdump's default,
#               the scroll API, --limit=500
#   scroll5000: elasticdump's scroll with --limit=5000, against the same
#               figures of our unsorted export (not run again)
# Prints a Markdown table (medians, ratio ours/elasticdump, all the runs);
# progress on stderr.
#
# elasticdump is installed by this script into .stack/bench/elasticdump and
# patched there (sed, idempotent): 6.125.1 opens an OpenSearch point in time
# at <host>/<index>/<index>/_search/point_in_time (the index twice: "no
# handler found") and closes it at <host>/<index>/_search/point_in_time; both
# are made <host>/... as OpenSearch wants.
#
# The load is kept: a rerun with the same ROWS reuses it when the database
# and the index both hold ROWS contacts (FRESH=1 loads anew).
#
# Env: ROWS (default 1000000), RUNS (default 3), FRESH (default 0).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
OS=${OPENSEARCH_URL%%,*}
DB=bench_edump
INDEX=${DB}_contacts
URL="postgres://postgres@127.0.0.1:${PG_PORT:-5433}/$DB"
COLUMNS=(uuid email first_name last_name title country departments)
EDUMP_VERSION=6.125.1
EDUMP_DIR=$BENCH/elasticdump
EDUMP_LOG=$BENCH/elasticdump.log
EDUMP_OUT=$BENCH/elasticdump-out.json

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.0f\n", (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
count() { python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])'; }

# --- elasticdump -------------------------------------------------------------

install_elasticdump() {
  local pkg=$EDUMP_DIR/node_modules/elasticdump/package.json
  if [ ! -f "$pkg" ] || [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$pkg")" != "$EDUMP_VERSION" ]; then
    echo "installing elasticdump@$EDUMP_VERSION into $EDUMP_DIR" >&2
    npm install --prefix "$EDUMP_DIR" --no-audit --no-fund "elasticdump@$EDUMP_VERSION" >&2
  fi
  patch_pit
}

# OpenSearch's point-in-time URLs without the index twice (see the header)
patch_pit() {
  local es=$EDUMP_DIR/node_modules/elasticdump/lib/transports/__es__
  # shellcheck disable=SC2016 # JavaScript template literals, not shell
  {
    sed -i 's|`${this.base.url}/${this.base.index|`${this.base.host}/${this.base.index|' "$es/_data.js"
    sed -i 's|uri: `${self.base.url}/_search/point_in_time`|uri: `${self.base.host}/_search/point_in_time`|' "$es/_helpers.js"
    grep -qF '`${this.base.host}/${this.base.index' "$es/_data.js" &&
      grep -qF 'uri: `${self.base.host}/_search/point_in_time`' "$es/_helpers.js"
  } || { echo "could not patch elasticdump's point-in-time URLs in $es" >&2; exit 1; }
}

# elasticdump <out-file> <options...>: the index's sources into out-file
edump() {
  local out=$1; shift
  rm -f "$out"
  echo "== elasticdump $*" >>"$EDUMP_LOG"
  "$EDUMP_DIR/node_modules/.bin/elasticdump" --input="$OS/$INDEX" --output="$out" --type=data --sourceOnly \
    "$@" >>"$EDUMP_LOG" 2>&1 || { echo "elasticdump failed; see $EDUMP_LOG" >&2; exit 1; }
}

# the search body: match_all, the columns as _source includes, then $1 (more JSON members)
search_body() {
  local includes; includes=$(printf '"%s",' "${COLUMNS[@]}")
  echo "{\"query\": {\"match_all\": {}}, \"_source\": {\"includes\": [${includes%,}]}${1:-}}"
}

# --- the load ------------------------------------------------------------------

loaded() { # the database and the index hold ROWS contacts
  [ "${FRESH:-0}" = 0 ] || return 1
  local n
  n=$(curl -fsS "$OS/$INDEX/_count" 2>/dev/null) || return 1
  n=$(count <<<"$n")
  [ "$n" = "$ROWS" ] || return 1
  n=$(psql -AtX "$URL" -c "SELECT count(*) FROM contacts" 2>/dev/null) || return 1
  [ "$n" = "$ROWS" ]
}

load() {
  if loaded; then
    echo "reusing $DB and $INDEX ($ROWS contacts)" >&2
    DATABASE_URL="$URL" API_KEYS=x RUST_LOG=warn target/release/api-server migrate
    return
  fi
  echo "loading $ROWS contacts into $DB and $INDEX" >&2
  local f out rows
  f=$(gen "$ROWS"); upload "$f" "bench/contacts-$ROWS.csv"
  fresh_db "$DB" >/dev/null
  out=$(run_job "$URL" insert_csv_file "{\"s3_key\": \"bench/contacts-$ROWS.csv\"}" yes)
  read -r rows _ <<<"$out"
  [ "$rows" = "$ROWS" ] || { echo "imported $rows rows, not $ROWS" >&2; exit 1; }
  curl -fsS -X POST "$OS/$INDEX/_refresh" >/dev/null
  rows=$(curl -fsS "$OS/$INDEX/_count" | count)
  [ "$rows" = "$ROWS" ] || { echo "$INDEX holds $rows documents, not $ROWS" >&2; exit 1; }
}

# our export's sort key for uuid (exact_field: the field itself, a keyword) is
# the one elasticdump sorts on
check_mapping() {
  local t
  t=$(curl -fsS "$OS/$INDEX/_mapping/field/uuid" |
    python3 -c 'import json,sys; print(next(iter(json.load(sys.stdin).values()))["mappings"]["uuid"]["mapping"]["uuid"]["type"])')
  [ "$t" = keyword ] || { echo "uuid in $INDEX is a $t, not a keyword: fix the sort of the comparisons" >&2; exit 1; }
}

# --- one run of each side ---------------------------------------------------------

ours() { # extra VQL members -> rows/s
  local cols out rows secs
  cols=$(printf '"%s",' "${COLUMNS[@]}")
  out=$(run_job "$URL" export_csv_file "{\"service\": \"contact\", \"vql\": {\"select_columns\": [${cols%,}], \"limit\": 500$1}}" yes)
  read -r rows secs _ <<<"$out"
  [ "$rows" = "$ROWS" ] || { echo "our export wrote $rows rows, not $ROWS" >&2; exit 1; }
  echo "  ours: $rows rows in $(printf '%.2f' "$secs") s" >&2
  calc "round($rows / $secs)"
}

peer() { # function running elasticdump into $1 -> rows/s of the whole process
  local t0 t1 n
  t0=$(date +%s.%N)
  "$1" "$EDUMP_OUT"
  t1=$(date +%s.%N)
  n=$(wc -l <"$EDUMP_OUT")
  [ "$n" = "$ROWS" ] || { echo "elasticdump ($1) wrote $n lines, not $ROWS; see $EDUMP_LOG" >&2; exit 1; }
  ! declare -F "check_${1#peer_}" >/dev/null || "check_${1#peer_}" "$EDUMP_OUT"
  echo "  elasticdump: $n lines in $(calc "round($t1 - $t0, 2)") s" >&2
  rm -f "$EDUMP_OUT"
  calc "round($n / ($t1 - $t0))"
}

# --- the comparisons --------------------------------------------------------------
# add <key> <label> <our extra VQL, or "=key": the figures of that comparison's
# export>; then define peer_<key>, which runs elasticdump into $1, and
# optionally check_<key>, which checks its output file $1 (untimed).

COMPARISONS=()
declare -A LABEL OURS OUR_RATES PEER_RATES
add() { COMPARISONS+=("$1"); LABEL[$1]=$2; OURS[$1]=$3; OUR_RATES[$1]=""; PEER_RATES[$1]=""; }

add sorted "same sort, uuid asc: ours order_by uuid, pages of 500; elasticdump PIT + search_after, --limit=500" \
  ', "order_by": [{"order_by": "uuid", "order_direction": "asc"}]'
peer_sorted() { edump "$1" --limit=500 --searchAfter=true --pit=true --searchBody="$(search_body ', "sort": [{"uuid": "asc"}]')"; }
check_sorted() { # the lines come in uuid order
  python3 -c 'import json,sys; u=[json.loads(l)["uuid"] for l in open(sys.argv[1])]; sys.exit(u != sorted(u))' "$1" ||
    { echo "elasticdump's lines are not in uuid order" >&2; exit 1; }
}

add unsorted "no order asked for: ours without order_by, pages of 500; elasticdump scroll (its default), --limit=500" ""
peer_unsorted() { edump "$1" --limit=500 --searchBody="$(search_body)"; }

add scroll5000 "extra: ours as above (no order_by, 500); elasticdump scroll, --limit=5000" "=unsorted"
peer_scroll5000() { edump "$1" --limit=5000 --searchBody="$(search_body)"; }

# --- main -------------------------------------------------------------------------

install_elasticdump
load
check_mapping
: >"$EDUMP_LOG"
for i in $(seq 1 "$RUNS"); do
  for c in "${COMPARISONS[@]}"; do
    echo "run $i/$RUNS, $c (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    if [[ ${OURS[$c]} != =* ]]; then
      r=$(ours "${OURS[$c]}"); OUR_RATES[$c]+=" $r"
    fi
    r=$(peer "peer_$c"); PEER_RATES[$c]+=" $r"
  done
done

our_rates() { local c=$1; [[ ${OURS[$c]} != =* ]] || c=${OURS[$c]#=}; echo "${OUR_RATES[$c]# }"; }
peer_rates() { echo "${PEER_RATES[$1]# }"; }
echo "| export of $ROWS contacts, ${#COLUMNS[@]} columns, $RUNS runs | ours, median | elasticdump $EDUMP_VERSION, median | ours / elasticdump |"
echo "|---|---|---|---|"
all_ours=(); all_peer=()
for c in "${COMPARISONS[@]}"; do
  read -ra o <<<"$(our_rates "$c")"; read -ra p <<<"$(peer_rates "$c")"
  mo=$(median "${o[@]}"); mp=$(median "${p[@]}")
  echo "| ${LABEL[$c]} | $mo rows/s | $mp rows/s | $(calc "'%.2f' % ($mo / $mp)") |"
  [[ ${OURS[$c]} == =* ]] || all_ours+=("$c ${o[*]}")
  all_peer+=("$c ${p[*]}")
done
list() { local s; s=$(printf '%s; ' "$@"); echo "${s%; }"; }
echo "| all runs, rows/s in run order | $(list "${all_ours[@]}") | $(list "${all_peer[@]}") | |"
