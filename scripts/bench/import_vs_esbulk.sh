#!/usr/bin/env bash
# Import with OpenSearch against bare bulk indexing (issue 13, item 2): the
# same documents that our import indexes, taken from PostgreSQL as NDJSON
# (`to_jsonb(row) - 'version'`, what the import sends), bulk-loaded by a bare
# indexer into a fresh index with the same settings and mapping (read back
# from the index our import created). Our import (guide defaults: batch 500)
# and the peer alternate, RUNS times each, fresh database and indices every
# run. Prints a Markdown table with medians and the ratio.
#
# The peer is esbulk (github.com/miku/esbulk, `go install`, GOTOOLCHAIN=local);
# where the Go module proxy does not serve it, scripts/bench/bulkload (the
# same job with opensearch-go's BulkIndexer: 4 workers, 5 MB requests).
#
# Env: ROWS (default 300000), RUNS (default 3), BATCH (default 500).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
ROWS=${ROWS:-300000}
RUNS=${RUNS:-3}
export BATCH=${BATCH:-500}
OS=${OPENSEARCH_URL%%,*}
gobin=$(realpath "$BENCH")/go-bin
mkdir -p "$gobin"
if [ -x "$gobin/esbulk" ] || GOTOOLCHAIN=local GOBIN="$gobin" go install github.com/miku/esbulk/cmd/esbulk@latest \
    2>"$BENCH/esbulk-install.log"; then
  peer=esbulk
else
  echo "esbulk could not be installed ($(tail -1 "$BENCH/esbulk-install.log")); using scripts/bench/bulkload" >&2
  (cd scripts/bench/bulkload && GOTOOLCHAIN=local go build -o "$gobin/bulkload" .)
  peer=bulkload
fi
f=$(gen "$ROWS"); upload "$f" "bench/contacts-$ROWS.csv"
ndjson="$BENCH/contacts-$ROWS.ndjson"
bare=bench_bare_contacts
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# a fresh index for the peer, with the settings and mapping of `$1`'s
fresh_peer_index() {
  curl -fsS -X DELETE "$OS/$bare?ignore_unavailable=true" >/dev/null
  curl -fsS "$OS/$1/_mapping" >"$BENCH/mapping.json"
  curl -fsS "$OS/$1/_settings" >"$BENCH/settings.json"
  python3 - "$BENCH/mapping.json" "$BENCH/settings.json" >"$BENCH/bare-index.json" <<'PY'
import json, sys
mapping = next(iter(json.load(open(sys.argv[1])).values()))["mappings"]
index = next(iter(json.load(open(sys.argv[2])).values()))["settings"]["index"]
print(json.dumps({"settings": {"number_of_shards": int(index["number_of_shards"]),
                               "number_of_replicas": int(index["number_of_replicas"]),
                               "analysis": index.get("analysis", {})},
                  "mappings": mapping}))
PY
  curl -fsS -X PUT -H 'Content-Type: application/json' "$OS/$bare" --data-binary @"$BENCH/bare-index.json" >/dev/null
}

peer_load() { # -> seconds, loading and refreshing
  local t0 t1; t0=$(date +%s.%N)
  case $peer in
    esbulk) "$gobin/esbulk" -server "$OS" -index "$bare" -id uuid -w 4 -size 2000 "$ndjson" >&2 ;;
    bulkload) "$gobin/bulkload" -server "$OS" -index "$bare" -id uuid -w 4 -flush-bytes $((5 << 20)) "$ndjson" >/dev/null ;;
  esac
  curl -fsS -X POST "$OS/$bare/_refresh" >/dev/null
  t1=$(date +%s.%N)
  local n; n=$(curl -fsS "$OS/$bare/_count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  [ "$n" -eq "$ROWS" ] || { echo "$peer indexed $n documents, not $ROWS" >&2; exit 1; }
  calc "$t1 - $t0"
}

import_rates=(); peer_rates=()
echo "| run | load before | import, PostgreSQL + OpenSearch (batch $BATCH) | $peer, same documents | ratio |"
echo "|---|---|---|---|---|"
for i in $(seq 1 "$RUNS"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  url=$(fresh_db bench_vs_bulk)
  read -r rows secs _rss <<<"$(run_job "$url" insert_csv_file "{\"s3_key\": \"bench/contacts-$ROWS.csv\"}" yes)"
  [ "$rows" -eq "$ROWS" ] || { echo "imported $rows rows, not $ROWS" >&2; exit 1; }
  ir=$(calc "round($rows / $secs)")
  if [ "$i" -eq 1 ]; then
    psql -AtX "$url" -c "SELECT (to_jsonb(t.*) - 'version')::text FROM contacts t" >"$ndjson"
  fi
  fresh_peer_index bench_vs_bulk_contacts
  ps=$(peer_load)
  pr=$(calc "round($ROWS / $ps)")
  import_rates+=("$ir"); peer_rates+=("$pr")
  echo "| $i | $load | $(printf '%.2f' "$secs") s, $ir rows/s | $(printf '%.2f' "$ps") s, $pr docs/s | $(calc "round(100 * $ir / $pr)") % |"
done
mi=$(median "${import_rates[@]}"); mp=$(median "${peer_rates[@]}")
echo "| median | | $mi rows/s | $mp docs/s | $(calc "round(100 * $mi / $mp)") % |"
