"""Times Feast's `materialize` of a Parquet file into its default SQLite online store.

Usage: feast_materialize.py PARQUET WORKDIR FEATURES START END
Prints one JSON line: {"seconds": ..., "rows": ..., "keys": ...}.
"""
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64


def main() -> None:
    parquet, workdir, n_features, start, end = sys.argv[1:6]
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {work / 'online_store.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    schema = pq.read_schema(parquet)
    fields = []
    for name in schema.names[3 : 3 + int(n_features)]:
        dtype = Int64 if str(schema.field(name).type).startswith("int") else Float64
        fields.append(Field(name=name, dtype=dtype))
    driver = Entity(name="driver", join_keys=["driver_id"])
    source = FileSource(
        path=parquet, timestamp_field="event_timestamp", created_timestamp_column="created"
    )
    view = FeatureView(
        name="stats",
        entities=[driver],
        ttl=timedelta(days=3650),
        schema=fields,
        source=source,
        online=True,
    )
    store = FeatureStore(repo_path=str(work))
    store.apply([driver, view])
    begin = time.perf_counter()
    store.materialize(
        start_date=datetime.fromisoformat(start).astimezone(timezone.utc),
        end_date=datetime.fromisoformat(end).astimezone(timezone.utc),
    )
    seconds = time.perf_counter() - begin
    keys = pq.read_table(parquet, columns=["driver_id"]).column(0).unique()
    print(json.dumps({"seconds": seconds, "rows": pq.read_metadata(parquet).num_rows, "keys": len(keys)}))


if __name__ == "__main__":
    main()
