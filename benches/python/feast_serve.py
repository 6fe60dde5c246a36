"""Sets up Feast over the load benchmark's Parquet files and runs `feast serve` (HTTP).

Usage: feast_serve.py DATA_DIR WORKDIR PORT [REDIS_CLUSTER_NODES]
DATA_DIR holds stats_a.parquet (50 features), stats_b.parquet and stats_c.parquet (10 each),
keyed by driver_id. Applies the same views and feature service as Quiver, materializes them into
Feast's default SQLite online store (or its Redis online store on the Redis Cluster of
REDIS_CLUSTER_NODES, `host:port,host:port,...`), prints "materialized ROWS SECONDS" and "ready",
then execs `feast serve`.
"""
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64


def main() -> None:
    data, workdir, port = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    workdir.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) > 4:
        online_store = (
            "  type: redis\n  redis_type: redis_cluster\n"
            f"  connection_string: \"{sys.argv[4]}\"\n"
        )
    else:
        online_store = f"  type: sqlite\n  path: {workdir / 'online_store.db'}\n"
    (workdir / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {workdir / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n{online_store}"
        "entity_key_serialization_version: 3\n"
    )
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    views, rows = [], 0
    for name in ("stats_a", "stats_b", "stats_c"):
        path = f"{data}/{name}.parquet"
        schema = pq.read_schema(path)
        rows += pq.read_metadata(path).num_rows
        fields = [
            Field(name=n, dtype=Int64 if str(schema.field(n).type).startswith("int") else Float64)
            for n in schema.names
            if n not in ("driver_id", "event_timestamp")
        ]
        views.append(FeatureView(
            name=name, entities=[driver], ttl=timedelta(days=0), schema=fields,
            source=FileSource(path=path, timestamp_field="event_timestamp"), online=True,
        ))
    service = FeatureService(name="three_views", features=views)
    store = FeatureStore(repo_path=str(workdir))
    store.apply([driver, service, *views])
    started = time.perf_counter()
    store.materialize(datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    print(f"materialized {rows} {time.perf_counter() - started:.3f}", flush=True)
    print("ready", flush=True)
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    os.execv(feast, [feast, "-c", str(workdir), "serve", "-h", "127.0.0.1", "-p", port,
                        "--no-access-log", "--max-requests", "0", "-w", "1"])


if __name__ == "__main__":
    main()
