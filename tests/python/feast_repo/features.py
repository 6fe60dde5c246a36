"""A Feast repository's definitions over Quiver's example data (the folder named by
QUIVER_DATA), for `feast apply`: sources named as Quiver's, so Quiver's Flight port answers
their pulls and writes."""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.feature_logging import LoggingConfig
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.types import Float32, Int64

DATA = Path(os.environ["QUIVER_DATA"])

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
stats_source = FileSource(
    name="driver_stats_source",
    path=str(DATA / "data/driver_hourly_stats.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    field_mapping={"trips": "avg_daily_trips"},
)
stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
    ],
    source=stats_source,
    online=True,
)
trips_source = FileSource(
    name="driver_customer_source",
    path=str(DATA / "data/driver_customer_trips"),
    timestamp_field="event_timestamp",
)
trips = FeatureView(
    name="driver_customer_trips",
    entities=[driver, customer],
    ttl=timedelta(days=7),
    # No schema: `feast apply` infers it through Quiver.
    source=trips_source,
    online=True,
)
service = FeatureService(
    name="driver_activity",
    features=[stats],
    logging_config=LoggingConfig(destination=FileLoggingDestination(path=str(DATA / "feature_logs"))),
)
