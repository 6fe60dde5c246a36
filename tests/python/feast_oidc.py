"""Feast's SDK with `auth: type: oidc` against `quiver serve`: an online read (remote online
store, Quiver's HTTP port) and a training set (remote offline store, Quiver's Flight port),
with a token Feast itself gets from the provider (client credentials or password grant).

Usage: feast_oidc.py REPO HTTP FLIGHT_HOST FLIGHT_PORT DISCOVERY_URL CLIENT_ID CLIENT_SECRET
       [USERNAME PASSWORD]   -- prints {"online": ..., "offline_rows": ...} (or the errors).
"""

import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64


def main():
    repo, http, host, port, discovery, client_id, secret = sys.argv[1:8]
    user = sys.argv[8:10]
    work = Path(tempfile.mkdtemp(prefix="quiver-feast-oidc-"))
    auth = (f"auth:\n  type: oidc\n  auth_discovery_url: {discovery}\n"
            f"  client_id: {client_id}\n  client_secret: {secret}\n")
    if user:
        auth += f"  username: {user[0]}\n  password: {user[1]}\n"
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: remote\n  path: {http}\n"
        f"offline_store:\n  type: remote\n  host: {host}\n  port: {port}\n"
        f"{auth}"
        "entity_key_serialization_version: 3\n"
    )
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(
        path=str(Path(repo) / "data/driver_hourly_stats.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        field_mapping={"trips": "avg_daily_trips"},
    )
    view = FeatureView(
        name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1),
        # The whole schema, entity column included: nothing is inferred from the source
        # (which would need the offline store's schema API).
        schema=[Field(name="driver_id", dtype=Int64),
                Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
                Field(name="avg_daily_trips", dtype=Int64)],
        source=source, online=True,
    )
    store = FeatureStore(repo_path=str(work))
    store.apply([driver, view])
    report = {}
    try:
        online = store.get_online_features(
            features=["driver_hourly_stats:avg_daily_trips"],
            entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}],
        ).to_dict()
        report["online"] = {k: list(v) for k, v in online.items()}
    except Exception as e:  # the test asserts on the message
        report["online_error"] = f"{type(e).__name__}: {e}"
    try:
        entity_df = pd.DataFrame({
            "driver_id": [1001, 1002],
            "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 2,
        })
        training = store.get_historical_features(
            entity_df=entity_df, features=["driver_hourly_stats:avg_daily_trips"]
        ).to_df()
        report["offline_rows"] = len(training)
    except Exception as e:
        report["offline_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
