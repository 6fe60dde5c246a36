"""Times Feast 0.67's Spark offline store building the same training set as Quiver.

Usage: feast_spark_training_set.py DATA_DIR OUT.parquet SPARK_CONNECT_URL
DATA_DIR holds entities.parquet, driver_stats.parquet, customer_profile.parquet and
driver_customer.parquet (written by training-set-bench). A Feast repository is made in a
temporary folder with the same entities and views (SparkSource over the same files, no ttl,
created timestamps), applied, and `get_historical_features(...).to_arrow()` is timed twice
in one process (the second request reuses the Spark session), the entity table given as a
Spark DataFrame read from the same Parquet file. Feast's Spark session
is a Spark Connect session on SPARK_CONNECT_URL (the cluster Quiver uses). Prints one JSON
line: {"seconds": ..., "second_seconds": ..., "rows": ..., "peak_rss_mb": ...}; the second
result goes to OUT.
"""
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from datetime import timedelta

import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, RepoConfig, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStoreConfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float64, Int64
from pyspark.sql import SparkSession

VIEWS = [
    ("driver_stats", ["driver"], "ds", 10),
    ("customer_profile", ["customer"], "cp", 5),
    ("driver_customer", ["driver", "customer"], "dc", 5),
]


def feature_type(i: int):
    # benches/support.rs: even features are float64, odd ones int64.
    return Float64 if i % 2 == 0 else Int64


def main() -> None:
    data, out, remote = sys.argv[1], sys.argv[2], sys.argv[3]
    warnings.simplefilter("ignore")
    repo = tempfile.mkdtemp(prefix="feast-spark-bench-")
    config = RepoConfig(
        project="bench",
        provider="local",
        registry=os.path.join(repo, "registry.db"),
        offline_store=SparkOfflineStoreConfig(spark_conf={"spark.remote": remote}),
        online_store={"type": "sqlite", "path": os.path.join(repo, "online.db")},
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    entities = {
        "driver": Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64),
        "customer": Entity(
            name="customer", join_keys=["customer_id"], value_type=ValueType.STRING
        ),
    }
    views, refs = [], []
    for view, keys, prefix, n in VIEWS:
        source = SparkSource(
            name=view,
            path=f"file://{os.path.abspath(data)}/{view}.parquet",
            file_format="parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        fields = [Field(name=f"{prefix}_f{i}", dtype=feature_type(i)) for i in range(n)]
        views.append(
            FeatureView(
                name=view,
                entities=[entities[k] for k in keys],
                ttl=timedelta(0),
                schema=fields,
                source=source,
            )
        )
        refs += [f"{view}:{f.name}" for f in fields]
    store.apply(list(entities.values()) + views)
    spark = SparkSession.builder.remote(remote).getOrCreate()
    entity_df = spark.read.parquet(f"file://{os.path.abspath(data)}/entities.parquet")
    start = time.perf_counter()
    store.get_historical_features(entity_df=entity_df, features=refs).to_arrow()
    seconds = time.perf_counter() - start
    # A second request in the same process and Spark session; its rows are the ones written.
    start = time.perf_counter()
    table = store.get_historical_features(entity_df=entity_df, features=refs).to_arrow()
    second = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pq.write_table(table, out)
    print(
        json.dumps(
            {"seconds": seconds, "second_seconds": second, "rows": table.num_rows, "peak_rss_mb": peak}
        )
    )


if __name__ == "__main__":
    main()
