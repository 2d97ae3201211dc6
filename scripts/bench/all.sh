#!/usr/bin/env bash
# `just bench`: every benchmark, one after another, on the real local stack.
# Each part's Markdown goes into docs/benchmarks.md between the markers
# `<!-- just-bench:begin -->` and `<!-- just-bench:end -->` (a run replaces
# the previous run's block), under the date, the commit and the load, and is
# written again after each part, so an interrupted run keeps what it did.
# The side-by-side parts alternate ours and the peer RUNS times (default 3)
# and give medians; the peers are installed by their own scripts.
#
# A part that fails is marked so in the block (its stderr is in
# .stack/bench/logs/<part>.err); the others still run; the exit status is
# then 1.
#
# Env: PARTS (a space-separated subset of the names below, default all),
# plus each script's own (ROWS, RUNS, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
LOGS=.stack/bench/logs
mkdir -p "$LOGS"
DOC=docs/benchmarks.md

# name | command | title
PLAN=(
  "runner|cargo run -q --release --locked -p connectra-jobs --example runner_bench|Runner: pickup latency and throughput"
  "runner_vs_river|scripts/bench/runner_vs_river.sh|Runner against River"
  "import_vs_copy|scripts/bench/import_vs_copy.sh|Import (guide defaults) against \`psql \\copy\`"
  "import_vs_esbulk|scripts/bench/import_vs_esbulk.sh|Import with OpenSearch against a bare bulk load"
  "import|scripts/bench/import.sh|Import: rows/s, memory, the 1 GB chart"
  "export|scripts/bench/export.sh|Export: each backend, against a bare scroll"
  "export_vs_elasticdump|scripts/bench/export_vs_elasticdump.sh|Export against elasticdump"
)
PARTS=${PARTS:-$(printf '%s\n' "${PLAN[@]}" | cut -d'|' -f1 | tr '\n' ' ')}

header="_Last run: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'), $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)._"

# Writes the block from the parts done so far.
write_block() {
  python3 - "$DOC" "$LOGS" "$header" "${done_parts[@]}" <<'PY'
import sys, pathlib
doc, logs, header, parts = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
begin, end = "<!-- just-bench:begin -->", "<!-- just-bench:end -->"
body = [begin, "## Latest `just bench` run", "", header, ""]
for part in parts:
    name, title, status, secs = part.split("|")
    body += [f"### {title} (`{name}`, {secs} s{'' if status == 'ok' else ', FAILED: see .stack/bench/logs/' + name + '.err'})", ""]
    out = (logs / f"{name}.md").read_text().strip()
    body += [out or "_(no output)_", ""]
body.append(end)
text = doc.read_text()
block = "\n".join(body)
if begin in text and end in text:
    text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
else:  # first run: after the introduction, before the first section
    at = text.index("\n## ")
    text = text[:at] + "\n\n" + block + "\n" + text[at:]
doc.write_text(text)
PY
}

done_parts=()
failed=0
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name command title <<<"$entry"
  [[ " $PARTS " == *" $name "* ]] || continue
  echo "== $name: $command (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  t0=$(date +%s)
  status=ok
  # shellcheck disable=SC2086 # the command's words
  $command >"$LOGS/$name.md" 2>"$LOGS/$name.err" || { status=failed; failed=1; tail -5 "$LOGS/$name.err" >&2; }
  done_parts+=("$name|$title|$status|$(($(date +%s) - t0))")
  write_block
done
echo "wrote $DOC" >&2
exit "$failed"
