"""Arrow Flight streaming throughput from `quiver serve` to a pyarrow client.

Usage: flight_throughput.py grpc://HOST:PORT DATA_DIR
Asks for the training set of DATA_DIR/entities.parquet (a training-set-bench data folder
served by `quiver serve`) with DoGet and times the stream from its first batch to its last, so
the join itself is not counted. Prints one JSON line: bytes, seconds, GB/s, rows.
"""
import json
import sys
import time

import pyarrow.flight as flight

FEATURES = ["driver_stats:*", "customer_profile:*", "driver_customer:*"]


def main() -> None:
    server, data = sys.argv[1], sys.argv[2]
    client = flight.FlightClient(server)
    ticket = flight.Ticket(json.dumps({"features": FEATURES, "entities": f"{data}/entities.parquet"}))
    reader = client.do_get(ticket)
    reader.read_chunk()
    start = time.perf_counter()
    total, rows = 0, 0  # bytes after the first batch, which ends with the join
    while True:
        try:
            chunk = reader.read_chunk().data
        except StopIteration:
            break
        total += chunk.nbytes
        rows += chunk.num_rows
    seconds = time.perf_counter() - start
    print(json.dumps({"bytes": total, "rows": rows, "seconds": seconds,
                      "gb_per_s": total / seconds / 1e9}))


if __name__ == "__main__":
    main()
