"""Read online features from `quiver serve`: Quiver's gRPC API (grpcio) and the Feast SDK.

    python online.py --grpc 127.0.0.1:6565 --http http://127.0.0.1:6566 --repo ../../demo_repo

1. Quiver's own API, `quiver.v1.OnlineService`, through grpcio stubs generated from
   proto/quiver/v1/online.proto at start-up (grpcio-tools; no generated code is checked in).
2. Feast's Python SDK with `online_store: type: remote` pointed at Quiver's HTTP port: a Feast
   user's code runs unchanged, only feature_store.yaml changes.

Prints one JSON object with both answers.
"""

import argparse
import importlib
import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def quiver_stubs():
    """Compiles Quiver's protos into a temporary package and imports them."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="quiver-stubs-"))
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main([
        "protoc", f"-I{PROTO_ROOT}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        str(PROTO_ROOT / "quiver/v1/online.proto"),
    ])
    if status != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(out))
    return (importlib.import_module("quiver.v1.online_pb2"),
            importlib.import_module("quiver.v1.online_pb2_grpc"))


def read_with_grpc(address, driver_ids):
    """GetOnlineFeatures over Quiver's gRPC API; returns {feature: [(value, status), ...]}."""
    import grpc

    pb, rpc = quiver_stubs()
    with grpc.insecure_channel(address) as channel:
        client = rpc.OnlineServiceStub(channel)
        request = pb.GetOnlineFeaturesRequest(
            feature_refs=pb.FeatureList(refs=[
                "driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]),
            entities=[pb.Column(name="driver_id",
                                values=[pb.Value(int64_value=d) for d in driver_ids])],
        )
        response = client.GetOnlineFeatures(request, timeout=5)
    answer = {}
    for column in response.features:
        values = []
        for value, status in zip(column.values, column.statuses):
            kind = value.WhichOneof("kind")
            values.append([getattr(value, kind) if kind else None,
                           pb.FieldStatus.Name(status)])
        answer[column.name] = values
    return answer


def read_with_feast(http, repo, driver_ids):
    """The same read through the Feast SDK (remote online store = Quiver's HTTP port)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float32, Int64

    work = Path(tempfile.mkdtemp(prefix="quiver-feast-"))
    (work / "feature_store.yaml").write_text(
        "project: demo\n"
        f"registry: {work / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: remote\n"
        f"  path: {http}\n"
        "entity_key_serialization_version: 3\n"
    )
    driver = Entity(name="driver", join_keys=["driver_id"])
    source = FileSource(
        path=str(Path(repo) / "data/driver_hourly_stats.parquet"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
        field_mapping={"trips": "avg_daily_trips"},
    )
    view = FeatureView(
        name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1),
        schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
                Field(name="avg_daily_trips", dtype=Int64)],
        source=source, online=True,
    )
    store = FeatureStore(repo_path=str(work))
    store.apply([driver, view])
    result = store.get_online_features(
        features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
        entity_rows=[{"driver_id": d} for d in driver_ids],
    ).to_dict()
    return {k: list(v) for k, v in result.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc", default="127.0.0.1:6565")
    parser.add_argument("--http", default="http://127.0.0.1:6566")
    parser.add_argument("--repo", required=True, help="the served feature repository")
    parser.add_argument("--drivers", default="1001,1002,4242")
    args = parser.parse_args()
    drivers = [int(d) for d in args.drivers.split(",")]
    print(json.dumps({
        "grpc": read_with_grpc(args.grpc, drivers),
        "feast_sdk": read_with_feast(args.http, args.repo, drivers),
    }))


if __name__ == "__main__":
    main()
