#!/usr/bin/env bash
# `just bench`: every benchmark, one after another, on the real local stack.
# Each part's Markdown goes into docs/benchmarks.md between the markers
# `<!-- just-bench:begin -->` and `<!-- just-bench:end -->`, under the date,
# the commit and the load of its run. The block is written again after each
# part, from every part's last output kept in .stack/bench/logs, so a run of
# a few PARTS, or an interrupted one, keeps the others' last figures.
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

# Writes the block: every part that has ever run here, in plan order, each
# under when, at which commit and on what load it last ran.
write_block() {
  local names; names=$(printf '%s\n' "${PLAN[@]}" | cut -d'|' -f1)
  # shellcheck disable=SC2086 # one word a part
  python3 - "$DOC" "$LOGS" $names <<'PY'
import sys, pathlib
doc, logs, names = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
begin, end = "<!-- just-bench:begin -->", "<!-- just-bench:end -->"
body = [begin, "## Latest `just bench` run", "",
        "_Each part as it last ran: when, at which commit, the load before it, and how long it took._", ""]
for name in names:
    meta = logs / f"{name}.meta"
    if not meta.exists():
        continue
    title, status, secs, when, commit, load = meta.read_text().strip().split("|")
    failed = "" if status == "ok" else f", FAILED: see .stack/bench/logs/{name}.err"
    body += [f"### {title} (`{name}`)", "",
             f"_{when}, commit {commit}, load before {load}, {secs} s{failed}._", ""]
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

commit="$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
failed=0
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name command title <<<"$entry"
  [[ " $PARTS " == *" $name "* ]] || continue
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $name: $command (load $load)" >&2
  when=$(date -u '+%Y-%m-%d %H:%M UTC')
  t0=$(date +%s)
  status=ok
  # shellcheck disable=SC2086 # the command's words
  $command >"$LOGS/$name.md" 2>"$LOGS/$name.err" || { status=failed; failed=1; tail -5 "$LOGS/$name.err" >&2; }
  echo "$title|$status|$(($(date +%s) - t0))|$when|$commit|$load" >"$LOGS/$name.meta"
  write_block
done
echo "wrote $DOC" >&2
exit "$failed"
