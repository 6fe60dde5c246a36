"""The Feast SDK's training set from Quiver (remote offline store) vs from Feast itself.

Usage: feast_offline_parity.py REPO FLIGHT_HOST FLIGHT_PORT
REPO is a `quiver init` example repository served by `quiver serve`. The same feature views
are declared to two Feast stores over the same Parquet files: one with Feast's own file
offline store, one with `offline_store: type: remote` pointed at Quiver. Both answer the same
get_historical_features; prints JSON {"rows": n, "columns": [...], "differences": [...]}.
"""
import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Float64, Int64


def objects(repo: Path):
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    stats = FeatureView(
        name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1),
        schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
                Field(name="avg_daily_trips", dtype=Int64)],
        source=FileSource(path=str(repo / "data/driver_hourly_stats.parquet"),
                          timestamp_field="event_timestamp", created_timestamp_column="created",
                          field_mapping={"trips": "avg_daily_trips"}),
    )
    profile = FeatureView(
        name="customer_profile", entities=[customer], ttl=timedelta(days=2),
        schema=[Field(name="current_balance", dtype=Float64),
                Field(name="lifetime_trip_count", dtype=Int64)],
        source=FileSource(path=str(repo / "data/customer_profile.parquet"),
                          timestamp_field="event_timestamp", created_timestamp_column="created"),
    )
    return [driver, customer, stats, profile]


def store(work: Path, offline: str, repo: Path) -> FeatureStore:
    work.mkdir(parents=True)
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        f"offline_store:\n{offline}"
        "online_store:\n  type: sqlite\n"
        f"  path: {work / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    s = FeatureStore(repo_path=str(work))
    s.apply(objects(repo))
    return s


def main() -> None:
    repo, host, port = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    work = Path(tempfile.mkdtemp(prefix="feast-parity-"))
    local = store(work / "local", "  type: file\n", repo)
    remote = store(work / "remote", f"  type: remote\n  host: {host}\n  port: {port}\n", repo)

    now = pd.Timestamp.now(tz="UTC").floor("h")
    hours = [1, 2, 5, 13, 23, 24, 25, 30, 47, 49, 70, 200]
    entity_df = pd.DataFrame({
        "driver_id": [1001 + (i % 12) for i in range(len(hours))],
        "customer_id": [f"C{1001 + (i % 25)}" for i in range(len(hours))],
        "event_timestamp": [now - pd.Timedelta(hours=h, minutes=7 * i) for i, h in enumerate(hours)],
        "label": list(range(len(hours))),
    })
    features = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips",
                "customer_profile:current_balance", "customer_profile:lifetime_trip_count"]

    expected = local.get_historical_features(entity_df=entity_df, features=features).to_df()
    got = remote.get_historical_features(entity_df=entity_df, features=features).to_df()

    columns = ["label", "conv_rate", "avg_daily_trips", "current_balance", "lifetime_trip_count"]
    # Feast's file offline store drops entity rows that match nothing in any view; the contract
    # (and Quiver) keeps every entity row with null features. Compare the rows Feast kept, and
    # report the ones it dropped with what Quiver returned for them.
    got = got.sort_values("label").reset_index(drop=True)[columns]
    dropped = got[~got["label"].isin(expected["label"])]
    got = got[got["label"].isin(expected["label"])].reset_index(drop=True)
    expected = expected.sort_values("label").reset_index(drop=True)[columns]
    differences = []
    for c in columns:
        a = pd.to_numeric(expected[c], errors="coerce").astype(float).to_numpy()
        b = pd.to_numeric(got[c], errors="coerce").astype(float).to_numpy()
        same = np.isclose(a, b, equal_nan=True, rtol=1e-6)
        for r in np.nonzero(~same)[0]:
            differences.append({"column": c, "label": int(expected["label"][r]),
                                "feast": None if np.isnan(a[r]) else a[r],
                                "quiver": None if np.isnan(b[r]) else b[r]})
    print(json.dumps({
        "rows": len(got) + len(dropped), "feast_rows": len(expected),
        "non_null": int(got["avg_daily_trips"].notna().sum()),
        "dropped_by_feast": dropped.astype(object).where(dropped.notna(), None).to_dict(orient="records"),
        "columns": columns, "differences": differences}, default=str))


if __name__ == "__main__":
    main()
