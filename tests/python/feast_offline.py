"""Feast 0.67's CLI and SDK with `offline_store: remote` pointed at Quiver's Flight port, and
Feast's own SQLite online store: every offline api Feast's remote store sends, on Quiver's
example data, for the repository in feast_repo/ (`feast apply`, `feast materialize`,
`feast plan` of a change).

Usage: feast_offline.py REPO FLIGHT_HOST FLIGHT_PORT QUIVER_HTTP

Prints one JSON object:
- "inferred": the features `feast apply` inferred for driver_customer_trips;
- "plan": what `feast plan` printed for a changed view, "tags_after_apply": its tags after
  the next `feast apply`;
- "feast_online" / "quiver_online": driver_hourly_stats for drivers 1001..1010 as Feast reads
  them from SQLite after `materialize` through Quiver, and as Quiver serves them after its
  own materialization ({feature: [values]});
- "pulled_latest": `pull_latest_from_table_or_query` of driver_stats_source: its row count
  and `trips` for drivers 1001..1010;
- "pulled_all": rows of `pull_all_from_table_or_query` over driver_customer_source, before
  and after `write_to_offline_store` appended one row (offline_write_batch);
- "appended_row": that row as pulled back;
- "saved_rows": rows of the saved dataset file `persist` wrote, "training_rows": rows of the
  training set it saved;
- "logged": rows of the logged-feature file Quiver wrote;
- "sql_error": the message Feast shows for an entity_df_sql.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
from feast.infra.offline_stores.remote import RemoteOfflineStore

DRIVERS = list(range(1001, 1011))
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips"]


def quiver_online(http: str) -> dict:
    body = json.dumps(
        {
            "features": [f"driver_hourly_stats:{f}" for f in FEATURES],
            "entities": {"driver_id": DRIVERS},
        }
    ).encode()
    request = urllib.request.Request(
        f"{http}/get-online-features", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    names = answer["metadata"]["feature_names"]
    return {
        name: result["values"]
        for name, result in zip(names, answer["results"])
        if name in FEATURES
    }


def main():
    # Feast prints progress on stdout; the report is all stdout carries.
    with contextlib.redirect_stdout(sys.stderr):
        report = run()
    print(json.dumps(report, default=str))


def run() -> dict:
    repo, host, port, http = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    work = Path(tempfile.mkdtemp(prefix="quiver-feast-offline-"))
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        f"offline_store:\n  type: remote\n  host: {host}\n  port: {port}\n"
        f"online_store:\n  type: sqlite\n  path: {work / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    shutil.copy(Path(__file__).parent / "feast_repo/features.py", work / "features.py")
    os.environ["QUIVER_DATA"] = str(repo)
    feast = str(Path(sys.executable).parent / "feast")

    def cli(*args):
        done = subprocess.run(
            [feast, *args], cwd=work, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"feast {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    report = {}
    # `feast apply` validates the sources and infers driver_customer_trips' schema through
    # Quiver; `feast materialize` reads through Quiver into Feast's SQLite online store.
    cli("apply")
    store = FeatureStore(repo_path=str(work))
    sys.path.insert(0, str(work))
    import features as definitions  # noqa: PLC0415 - the repository written above

    stats_source, trips_source = definitions.stats_source, definitions.trips_source
    report["inferred"] = sorted(
        f.name for f in store.get_feature_view("driver_customer_trips").features
    )
    now = datetime.now(timezone.utc)
    window = [(now - timedelta(days=30)).isoformat(), now.isoformat()]
    cli("materialize", *window, "--views", "driver_hourly_stats")
    online = store.get_online_features(
        features=[f"driver_hourly_stats:{f}" for f in FEATURES],
        entity_rows=[{"driver_id": d} for d in DRIVERS],
    ).to_dict()
    report["feast_online"] = {f: online[f] for f in FEATURES}
    report["quiver_online"] = quiver_online(http)
    latest = RemoteOfflineStore.pull_latest_from_table_or_query(
        config=store.config,
        data_source=stats_source,
        join_key_columns=["driver_id"],
        feature_name_columns=["conv_rate", "acc_rate", "trips"],
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        start_date=now - timedelta(days=30),
        end_date=now,
    ).to_arrow()
    by_driver = {r["driver_id"]: r["trips"] for r in latest.to_pylist()}
    report["pulled_latest"] = {
        "rows": latest.num_rows,
        "trips": [by_driver.get(d) for d in DRIVERS],
    }

    # pull_all_from_table_or_query, before and after offline_write_batch.
    def pull_all():
        return RemoteOfflineStore.pull_all_from_table_or_query(
            config=store.config,
            data_source=trips_source,
            join_key_columns=["driver_id", "customer_id"],
            feature_name_columns=["trips_together", "last_rating"],
            timestamp_field="event_timestamp",
            start_date=now - timedelta(days=30),
            end_date=now + timedelta(days=1),
        ).to_arrow()

    before = pull_all().num_rows
    row = pd.DataFrame(
        {
            "driver_id": [4242],
            "customer_id": ["C4242"],
            "event_timestamp": [pd.Timestamp(now)],
            "trips_together": [17],
            "last_rating": [pd.Series([4.5], dtype="float32")[0]],
        }
    )
    store.write_to_offline_store("driver_customer_trips", row)
    after = pull_all()
    report["pulled_all"] = [before, after.num_rows]
    appended = after.filter(pa.compute.equal(after["driver_id"], 4242)).to_pylist()
    report["appended_row"] = [
        {k: v for k, v in r.items() if k != "event_timestamp"} for r in appended
    ]

    # persist: a training set saved as a dataset file under Quiver's data root.
    entity_df = pd.DataFrame(
        {"driver_id": DRIVERS, "event_timestamp": [pd.Timestamp(now)] * len(DRIVERS)}
    )
    job = store.get_historical_features(
        entity_df=entity_df, features=[f"driver_hourly_stats:{f}" for f in FEATURES]
    )
    saved_path = repo / "saved/driver_training.parquet"
    store.create_saved_dataset(
        from_=job,
        name="driver_training",
        storage=SavedDatasetFileStorage(path=str(saved_path)),
    )
    report["training_rows"] = job.to_arrow().num_rows
    report["saved_rows"] = pq.read_table(saved_path).num_rows
    try:
        store.create_saved_dataset(
            from_=job,
            name="driver_training_again",
            storage=SavedDatasetFileStorage(path=str(saved_path)),
        )
        report["persist_again"] = "no error"
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        report["persist_again"] = str(e)

    # write_logged_features: what a feature server logged for the service.
    service = store.get_feature_service("driver_activity")
    logs = pa.table(
        {
            "driver_id": pa.array(DRIVERS[:3], pa.int64()),
            "driver_hourly_stats__conv_rate": pa.array([0.1, 0.2, 0.3], pa.float32()),
            "__log_timestamp": pa.array([now] * 3, pa.timestamp("us", tz="UTC")),
            "__log_date": pa.array([now.date()] * 3, pa.date32()),
            "__request_id": pa.array(["a", "b", "c"]),
        }
    )
    store.write_logged_features(logs=logs, source=service)
    logged = sorted((repo / "feature_logs/driver_activity").glob("*.parquet"))
    report["logged"] = sum(pq.read_table(f).num_rows for f in logged)

    # A change: `feast plan` shows it, then `feast apply` applies it.
    with open(work / "features.py", "a") as f:
        f.write('stats.tags = {"team": "drivers"}\n')
    report["plan"] = cli("plan")
    cli("apply")
    store.refresh_registry()
    report["tags_after_apply"] = store.get_feature_view("driver_hourly_stats").tags

    # entity_df_sql: refused with what to send instead.
    try:
        store.get_historical_features(
            entity_df="SELECT driver_id, event_timestamp FROM drivers",
            features=["driver_hourly_stats:conv_rate"],
        ).to_arrow()
        report["sql_error"] = "no error"
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        report["sql_error"] = str(e)

    return report


if __name__ == "__main__":
    main()
