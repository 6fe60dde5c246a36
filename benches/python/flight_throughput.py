"""Arrow Flight streaming throughput from `quiver serve` to a pyarrow client, next to the
physical reference: a pyarrow Flight server streaming the same table from memory.

Usage: flight_throughput.py grpc://HOST:PORT DATA_DIR RUNS
Asks `quiver serve` for the training set of DATA_DIR/entities.parquet (a training-set-bench
data folder) with DoGet RUNS times and times each stream from its first batch to its last, so
the join itself is not counted. Then starts a pyarrow Flight server in its own process on
loopback, holding the same table (the same batches) in memory, and times RUNS streams of it
with the same client code. Prints one JSON line: bytes, rows, every run's GB/s and the medians.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.flight as flight

FEATURES = ["driver_stats:*", "customer_profile:*", "driver_customer:*"]


def stream(client: flight.FlightClient, ticket: flight.Ticket, keep: bool = False):
    """(bytes, rows, seconds after the first batch, batches if `keep`) of one DoGet."""
    reader = client.do_get(ticket)
    first = reader.read_chunk().data
    batches = [first] if keep else None
    start = time.perf_counter()
    total, rows = 0, 0  # bytes after the first batch, which ends with the join
    while True:
        try:
            chunk = reader.read_chunk().data
        except StopIteration:
            break
        total += chunk.nbytes
        rows += chunk.num_rows
        if keep:
            batches.append(chunk)
    return total, rows, time.perf_counter() - start, batches


class Reference(flight.FlightServerBase):
    """Streams one in-memory table to every DoGet."""

    def __init__(self, location: str, table: pa.Table):
        super().__init__(location)
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def serve_reference(path: str) -> None:
    """The reference server's process: loads the table into memory, prints its port."""
    with pa.OSFile(path) as f:
        table = pa.ipc.open_file(f).read_all()
    server = Reference("grpc://127.0.0.1:0", table)
    print(server.port, flush=True)
    server.serve()


def rates(client: flight.FlightClient, ticket: flight.Ticket, runs: int):
    out = []
    for _ in range(runs):
        total, rows, seconds, _ = stream(client, ticket)
        out.append(total / seconds / 1e9)
    return out, total, rows


def main() -> None:
    if sys.argv[1] == "--serve-reference":
        serve_reference(sys.argv[2])
        return
    server, data, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = flight.FlightClient(server)
    ticket = flight.Ticket(json.dumps({"features": FEATURES, "entities": f"{data}/entities.parquet"}))
    # One untimed stream keeps the batches for the reference server.
    _, _, _, batches = stream(client, ticket, keep=True)
    quiver, total, rows = rates(client, ticket, runs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "table.arrow")
        with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, batches[0].schema) as w:
            for b in batches:
                w.write_batch(b)
        child = subprocess.Popen([sys.executable, __file__, "--serve-reference", path],
                                 stdout=subprocess.PIPE, text=True)
        try:
            port = int(child.stdout.readline())
            reference, ref_total, _ = rates(flight.FlightClient(f"grpc://127.0.0.1:{port}"),
                                            flight.Ticket(b"table"), runs)
        finally:
            child.kill()
            child.wait()
    print(json.dumps({
        "bytes": total, "rows": rows, "columns": batches[0].num_columns, "reference_bytes": ref_total,
        "quiver_gb_per_s": quiver, "reference_gb_per_s": reference,
        "quiver_median": statistics.median(quiver),
        "reference_median": statistics.median(reference),
    }))


if __name__ == "__main__":
    main()
