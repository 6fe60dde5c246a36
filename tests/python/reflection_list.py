"""Lists a gRPC server's services through server reflection, as `grpcurl list` does.

Usage: reflection_list.py HOST:PORT
Asks reflection v1alpha (what grpcio-reflection and grpcurl before 1.9 speak), then resolves
every Quiver and Feast service to its methods, which needs every file they import. Prints
JSON {"services": [...], "methods": {"service": ["method", ...]}}.
"""
import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    with grpc.insecure_channel(sys.argv[1]) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = DescriptorPool(database)
        methods = {
            name: sorted(m.name for m in pool.FindServiceByName(name).methods)
            for name in services
            if name.startswith(("quiver.", "feast."))
        }
    print(json.dumps({"services": services, "methods": methods}))


if __name__ == "__main__":
    main()
