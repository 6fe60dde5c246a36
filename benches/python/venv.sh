#!/usr/bin/env bash
# Prints the path of a Python venv with benches/python/requirements.txt installed, creating or
# updating it when needed (default: /var/tmp/quiver-bench-venv; override with QUIVER_BENCH_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${QUIVER_BENCH_VENV:-/var/tmp/quiver-bench-venv}
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv"
