"""Times DuckDB's SUMMARIZE over the feature columns of a Parquet file.

Usage: duckdb_summarize.py FILE.parquet N_FEATURES
SUMMARIZE computes, per column: min, max, approx_unique (HyperLogLog), avg, std, q25/q50/q75
(approximate quantiles), count and null_percentage -- what `quiver monitor profile` reports.
Prints one JSON line: {"seconds": ..., "rows": ..., "f0": {"avg": ..., "q50": ..., "approx_unique": ...}}.
"""
import json
import sys
import time

import duckdb


def main() -> None:
    path, features = sys.argv[1], int(sys.argv[2])
    columns = ", ".join(f"f{i}" for i in range(features))
    con = duckdb.connect()
    started = time.perf_counter()
    rows = con.execute(f"SUMMARIZE SELECT {columns} FROM read_parquet('{path}')").fetchall()
    seconds = time.perf_counter() - started
    names = [d[0] for d in con.description]
    first = dict(zip(names, rows[0]))
    print(json.dumps({
        "seconds": seconds,
        "rows": int(first["count"]),
        "f0": {k: float(first[k]) for k in ("avg", "q50", "approx_unique")},
    }))


if __name__ == "__main__":
    main()
