#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults: create an example feature repository, plan,
# apply, look at what was registered, materialize it into the online store and read it back.
set -euo pipefail
dir=${1:?usage: demo.sh DIR}
bin="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}/debug/quiver"

step() { printf '\n\033[1m$ quiver %s\033[0m\n' "$*"; "$bin" --repo "$dir" "$@"; }

rm -rf "$dir"
step init "$dir"
step plan
step apply --author demo
step list views
step list services
step describe view driver_customer_trips
step registry log
step materialize-incremental now
step online get --view driver_hourly_stats --key driver_id=1001
step online get --view driver_customer_trips --key driver_id=1001 --key customer_id=C1001
step online stats
