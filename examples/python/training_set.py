"""Fetch a point-in-time-correct training set from `quiver serve` over Arrow Flight.

A pandas DataFrame of entity rows (join keys, an event timestamp, labels) goes in; a DataFrame
with the features as they were known at each row's timestamp comes out. The entity table is
streamed to the server with DoExchange and the result streams back as Arrow record batches.

    python training_set.py --server grpc://127.0.0.1:8815
"""

import argparse
import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.flight as flight


def get_training_set(client, entity_df, features=None, feature_service=None,
                     full_feature_names=False, as_of_created=False):
    """Joins features (["view:feature", ...]) or a feature service onto entity_df."""
    command = {"full_feature_names": full_feature_names, "as_of_created": as_of_created}
    if features is not None:
        command["features"] = features
    else:
        command["feature_service"] = feature_service
    descriptor = flight.FlightDescriptor.for_command(json.dumps(command))
    table = pa.Table.from_pandas(entity_df, preserve_index=False)
    writer, reader = client.do_exchange(descriptor)
    writer.begin(table.schema)
    writer.write_table(table)
    writer.done_writing()
    result = reader.read_all()
    writer.close()
    return result.to_pandas()


def example_entities():
    """Rows for the drivers of `quiver init`'s example, at a few past hours, with a label."""
    now = pd.Timestamp.now(tz="UTC").floor("h")
    return pd.DataFrame({
        "driver_id": [1001, 1002, 1003, 1001, 9999],
        "customer_id": ["C1001", "C1002", "C1003", "C1004", "C1005"],
        "event_timestamp": [now - pd.Timedelta(hours=h) for h in (1, 2, 5, 30, 1)],
        "label_accepted": [1, 0, 1, 1, 0],
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="grpc://127.0.0.1:8815")
    parser.add_argument("--features", default="driver_hourly_stats:conv_rate,"
                        "driver_hourly_stats:avg_daily_trips,customer_profile:current_balance")
    parser.add_argument("--service", help="a feature service instead of --features")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    client = flight.FlightClient(args.server)
    entities = example_entities()
    try:
        df = get_training_set(
            client, entities,
            features=None if args.service else args.features.split(","),
            feature_service=args.service)
    except flight.FlightError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(df.to_json(orient="records", date_format="iso"))
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            print(df)


if __name__ == "__main__":
    main()
