#!/usr/bin/env bash
# Prints the path of a Python venv with benches/python/requirements.txt installed, creating or
# updating it when needed (default: /var/tmp/quiver-bench-venv; override with QUIVER_BENCH_VENV).
# `venv.sh httpfs` does the same for requirements-httpfs.txt (DuckDB with its httpfs extension,
# which pins its own DuckDB version) in /var/tmp/quiver-bench-httpfs-venv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "httpfs" ]; then
  venv=/var/tmp/quiver-bench-httpfs-venv
  requirements="$here/requirements-httpfs.txt"
else
  venv=${QUIVER_BENCH_VENV:-/var/tmp/quiver-bench-venv}
  requirements="$here/requirements.txt"
fi
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv"
