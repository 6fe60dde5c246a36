"""A Feast repository with `registry`, `offline_store` and `online_store` all pointed at one
`quiver serve` (Feast 0.67's CLI and SDK, unchanged): the repository in feast_repo/.

Usage: feast_registry.py REPO GRPC_ADDRESS FLIGHT_HOST FLIGHT_PORT QUIVER_HTTP

Prints one JSON object:
- "before": what Feast's SDK lists of Quiver's own definitions before any `feast apply`
  ({"views", "services", "sources", "entities"}, sorted names) and the join key and type
  Feast sees for entity 'driver';
- "apply": what `feast apply` printed, "plan_unchanged": what `feast plan` printed right
  after it, "dump": what `feast registry-dump` printed, "after": the listing after it;
- "most_recent_end_time": the end Feast reads back for driver_hourly_stats after recording a
  materialization interval ending at "materialized_until";
- "online": driver_hourly_stats for drivers 1001..1010 read through the SDK after
  `feast materialize` (the rows written through Quiver);
- "historical": conv_rate of a training set for the same drivers, now;
- "plan": what `feast plan` printed for a changed view, "tags_after_apply": its tags after
  the next `feast apply`;
- "saved": a saved dataset as Feast lists it and reads it back (features, conv_rate);
- "refused": the error `feast apply` gives for an on-demand feature view;
- "teardown": what `feast teardown` printed.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

DRIVERS = list(range(1001, 1011))
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips"]


def main():
    # Feast prints progress on stdout; the report is all stdout carries.
    with contextlib.redirect_stdout(sys.stderr):
        report = run()
    print(json.dumps(report, default=str))


def listing(store: FeatureStore) -> dict:
    return {
        "views": sorted(v.name for v in store.list_feature_views()),
        "services": sorted(s.name for s in store.list_feature_services()),
        "sources": sorted(s.name for s in store.list_data_sources()),
        "entities": sorted(e.name for e in store.list_entities()),
    }


def run() -> dict:
    repo, grpc, host, port, http = (Path(sys.argv[1]), *sys.argv[2:6])
    work = Path(tempfile.mkdtemp(prefix="quiver-feast-registry-"))
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry:\n  registry_type: remote\n  path: {grpc}\n"
        "provider: local\n"
        f"offline_store:\n  type: remote\n  host: {host}\n  port: {port}\n"
        f"online_store:\n  type: remote\n  path: {http}\n"
        "entity_key_serialization_version: 3\n"
    )
    shutil.copy(Path(__file__).parent / "feast_repo/features.py", work / "features.py")
    os.environ["QUIVER_DATA"] = str(repo)
    feast = str(Path(sys.executable).parent / "feast")

    def cli(*args, ok=True):
        done = subprocess.run(
            [feast, *args], cwd=work, capture_output=True, text=True, timeout=300
        )
        if ok and done.returncode != 0:
            raise RuntimeError(f"feast {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout + done.stderr

    report = {}
    store = FeatureStore(repo_path=str(work))
    driver = store.get_entity("driver")
    report["before"] = {
        **listing(store),
        "driver": [driver.join_key, str(driver.value_type)],
    }

    report["apply"] = cli("apply")
    report["plan_unchanged"] = cli("plan")
    report["dump"] = cli("registry-dump")
    store = FeatureStore(repo_path=str(work))
    report["after"] = listing(store)

    now = datetime.now(timezone.utc)
    cli(
        "materialize",
        (now - timedelta(days=30)).isoformat(),
        now.isoformat(),
        "--views",
        "driver_hourly_stats",
    )
    # What Feast records after materializing into one of its own online stores.
    view = store.get_feature_view("driver_hourly_stats")
    store.registry.apply_materialization(view, "demo", now - timedelta(days=1), now)
    store.refresh_registry()
    recorded = store.get_feature_view("driver_hourly_stats").most_recent_end_time
    report["most_recent_end_time"] = recorded.isoformat() if recorded else None
    report["materialized_until"] = now.isoformat()
    online = store.get_online_features(
        features=[f"driver_hourly_stats:{f}" for f in FEATURES],
        entity_rows=[{"driver_id": d} for d in DRIVERS],
    ).to_dict()
    report["online"] = {f: online[f] for f in FEATURES}

    entity_df = pd.DataFrame(
        {"driver_id": DRIVERS, "event_timestamp": [pd.Timestamp(now)] * len(DRIVERS)}
    )
    training = store.get_historical_features(
        entity_df=entity_df, features=["driver_hourly_stats:conv_rate"]
    ).to_df()
    report["historical"] = training.sort_values("driver_id")["conv_rate"].tolist()

    # A saved dataset: the file persist wrote under the data root, registered with Quiver,
    # and read back through it.
    job = store.get_historical_features(
        entity_df=entity_df, features=["driver_hourly_stats:conv_rate"]
    )
    store.create_saved_dataset(
        from_=job,
        name="driver_training",
        storage=SavedDatasetFileStorage(path=str(repo / "saved/driver_training.parquet")),
    )
    store = FeatureStore(repo_path=str(work))
    saved = store.get_saved_dataset("driver_training")
    report["saved"] = {
        "listed": [d.name for d in store.list_saved_datasets()],
        "features": saved.features,
        "conv_rate": saved.to_df().sort_values("driver_id")["conv_rate"].tolist(),
    }

    with open(work / "features.py", "a") as f:
        f.write('stats.tags = {"team": "drivers"}\n')
    report["plan"] = cli("plan")
    cli("apply")
    store = FeatureStore(repo_path=str(work))
    report["tags_after_apply"] = store.get_feature_view("driver_hourly_stats").tags

    # An object Quiver cannot represent is refused by name, and nothing is applied.
    with open(work / "features.py", "a") as f:
        f.write(
            "from feast import RequestSource\n"
            "from feast.on_demand_feature_view import on_demand_feature_view\n"
            "from feast.types import Float64\n"
            "request = RequestSource(name='vals', schema=[Field(name='val', dtype=Int64)])\n"
            "@on_demand_feature_view(sources=[request], schema=[Field(name='doubled', dtype=Float64)])\n"
            "def doubled(inputs):\n"
            "    import pandas as pd\n"
            "    return pd.DataFrame({'doubled': inputs['val'] * 2.0})\n"
        )
    report["refused"] = cli("apply", ok=False)
    # `feast teardown` removes the project's definitions.
    with open(work / "features.py", "w") as f:
        f.write((Path(__file__).parent / "feast_repo/features.py").read_text())
    report["teardown"] = cli("teardown")
    return report


if __name__ == "__main__":
    main()
