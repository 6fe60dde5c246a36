"""`feast apply` through Quiver's Flight port (offline_store: remote): a feature view with no
schema, whose features Feast infers by asking Quiver for the source's columns and types.

Usage: feast_infer.py REPO FLIGHT_HOST FLIGHT_PORT -- prints {"features": {name: type}}.
"""

import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureStore, FeatureView, FileSource, ValueType


def main():
    repo, host, port = sys.argv[1:4]
    work = Path(tempfile.mkdtemp(prefix="quiver-feast-infer-"))
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        f"offline_store:\n  type: remote\n  host: {host}\n  port: {port}\n"
        f"online_store:\n  type: sqlite\n  path: {work / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(
        name="driver_stats_source",
        path=str(Path(repo) / "data/driver_hourly_stats.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1),
                       source=source, online=True)
    store = FeatureStore(repo_path=str(work))
    store.apply([driver, view])
    applied = store.get_feature_view("driver_hourly_stats")
    print(json.dumps({"features": {f.name: str(f.dtype) for f in applied.features}}))


if __name__ == "__main__":
    main()
