#!/usr/bin/env bash
# Export benchmark (issue 5): 1,000,000 contacts exported by a real
# job-runner with each search backend (rows/s, peak RSS), and in the same run
# a bare search_after scroll of the same query in OpenSearch (the plain
# paging a client would do, pages of 500: what the export did before it read
# uuid ranges). Prints Markdown.
#
# Env: ROWS (default 1000000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROWS=${ROWS:-1000000}
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
cargo build --release --locked -p connectra-search --example bare_scroll 2>&1 | tail -1 >&2

f=$(gen "$ROWS"); upload "$f" "bench/contacts-$ROWS.csv"
url=$(fresh_db bench_export)
# load PostgreSQL and the OpenSearch index (prefix = database name)
curl -fsS -X DELETE "${OPENSEARCH_URL%%,*}/bench_export_contacts,bench_export_contacts_v*,bench_export_companies,bench_export_companies_v*?ignore_unavailable=true" >/dev/null
run_job "$url" insert_csv_file "{\"s3_key\": \"bench/contacts-$ROWS.csv\"}" yes >/dev/null

COLUMNS=(uuid email first_name last_name title country departments)
cols_json=$(printf '"%s",' "${COLUMNS[@]}"); cols_json="[${cols_json%,}]"
data="{\"service\": \"contact\", \"vql\": {\"select_columns\": $cols_json, \"limit\": 500}}"
read -r pg_rows pg_s pg_rss <<<"$(run_job "$url" export_csv_file "$data" no)"
read -r os_rows os_s os_rss <<<"$(run_job "$url" export_csv_file "$data" yes)"
read -r bare_rows bare_s <<<"$(target/release/examples/bare_scroll "$OPENSEARCH_URL" bench_export_contacts 500 "${COLUMNS[@]}")"

rate() { calc "round($1 / $2)"; }
echo "| export of $ROWS contacts, ${#COLUMNS[@]} columns, \`limit\` 500, no \`order_by\` (uuid order, read in pages of 5,000) | result |"
echo "|---|---|"
echo "| PostgreSQL backend (REPEATABLE READ keyset pages) | $(printf '%.1f' "$pg_s") s, $(rate "$pg_rows" "$pg_s") rows/s, peak RSS $((pg_rss / 1024)) MiB |"
echo "| OpenSearch backend (point in time, uuid ranges read two at a time) | $(printf '%.1f' "$os_s") s, $(rate "$os_rows" "$os_s") rows/s, peak RSS $((os_rss / 1024)) MiB |"
echo "| bare scroll, plain point in time + search_after, pages of 500, no CSV/S3 | $(printf '%.1f' "$bare_s") s, $(rate "$bare_rows" "$bare_s") rows/s |"
echo "| OpenSearch export vs bare scroll | $(calc "round(100 * $os_rows / $os_s / ($bare_rows / $bare_s))") % |"
