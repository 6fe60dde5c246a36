#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults: create an example feature repository, plan,
# apply, look at what was registered, materialize it into the online store and read it back,
# build a training set in-process, profile the driver data and check it for drift, then start `quiver serve` and ask it for online features
# (gRPC), materialize through it while it serves, and ask it for a training set (Arrow
# Flight, from the pyarrow example client).
set -euo pipefail
dir=${1:?usage: demo.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
bin="${CARGO_TARGET_DIR:-$here/../target}/debug/quiver"

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

# A training set in-process: entity rows from the last day of driver data.
python=$("$here/python/venv.sh")/bin/python
"$python" - "$dir/entities.parquet" <<'PY'
import sys
import pandas as pd
now = pd.Timestamp.now(tz="UTC").floor("h")
pd.DataFrame({
    "driver_id": [1001, 1002, 1003, 1004],
    "customer_id": ["C1001", "C1002", "C1003", "C1004"],
    "event_timestamp": [now - pd.Timedelta(hours=h) for h in (1, 3, 6, 30)],
    "label": [1, 0, 1, 0],
}).to_parquet(sys.argv[1], index=False)
PY
step training-set --entities "$dir/entities.parquet" --service driver_activity --out "$dir/training.parquet"

# Statistics and drift of the driver data: the last day against the month before it (exit 2
# would mean a feature drifted; the report is in drift.html either way).
step monitor profile --view driver_hourly_stats --data 30d
step monitor drift --view driver_hourly_stats --reference now-30d..now-1d --current 1d \
    --html "$dir/drift.html" || [ $? -eq 2 ]

# The server: online reads over gRPC, training sets over Arrow Flight.
log="$dir/serve.log"
printf '\n\033[1m$ quiver serve --grpc-port 0 --http-port 0 --flight-port 0 &\033[0m\n'
"$bin" --repo "$dir" serve --grpc-port 0 --http-port 0 --flight-port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^Arrow Flight' "$log" && break; sleep 0.1; done
cat "$log"
grpc=$(sed -n 's/^Online gRPC: //p' "$log")
flight=$(sed -n 's/^Arrow Flight: //p' "$log")
step get-online --server "$grpc" --features driver_hourly_stats:conv_rate,driver_hourly_stats:avg_daily_trips --entity driver_id=1001,1002,9999
# The server owns the online store now: these go through it while it serves.
step materialize-incremental now
step materialize status
printf '\n\033[1m$ python examples/python/training_set.py --server %s\033[0m\n' "$flight"
"$python" "$here/python/training_set.py" --server "$flight"
kill -TERM "$server"
wait "$server"
