#!/usr/bin/env bash
# Prints the path of a Python venv with examples/python/requirements.txt installed, creating or
# updating it when needed (default: /var/tmp/quiver-examples-venv; override with
# QUIVER_EXAMPLES_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${QUIVER_EXAMPLES_VENV:-/var/tmp/quiver-examples-venv}
stamp="$venv/.requirements"
# One creator at a time (tests start several users of the venv at once).
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2 || {
    echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  }
fi
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv"
