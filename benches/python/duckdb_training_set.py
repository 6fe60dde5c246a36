"""Times DuckDB's ASOF LEFT JOIN building the same training set as Quiver.

Usage: duckdb_training_set.py DATA_DIR OUT.parquet [S3_ENDPOINT S3_PREFIX]
DATA_DIR holds entities.parquet, driver_stats.parquet, customer_profile.parquet and
driver_customer.parquet (written by training-set-bench). Each source is first reduced to one
row per (key, event_timestamp) -- the greatest created timestamp -- because ASOF picks an
arbitrary row among equal timestamps; that is the tie rule Quiver applies. Prints one JSON line:
{"seconds": ..., "rows": ..., "peak_rss_mb": ...}; the result (without timing) goes to OUT.
With S3_ENDPOINT (host:port of a plain-HTTP S3 server) and S3_PREFIX (s3://bucket/prefix), the
three sources are read from S3_PREFIX/<view>.parquet through the httpfs extension (from the
duckdb-extension-httpfs package), with the credentials of AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY.
"""
import json
import resource
import sys
import time

import duckdb

VIEWS = [
    ("driver_stats", ["driver_id"], [f"ds_f{i}" for i in range(10)]),
    ("customer_profile", ["customer_id"], [f"cp_f{i}" for i in range(5)]),
    ("driver_customer", ["driver_id", "customer_id"], [f"dc_f{i}" for i in range(5)]),
]


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    sources = data
    if len(sys.argv) > 3:
        import os

        import duckdb_extension_httpfs

        endpoint, sources = sys.argv[3], sys.argv[4]
        folder = os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), "extensions")
        version = os.listdir(folder)[0]
        con.execute(f"LOAD '{folder}/{version}/httpfs.duckdb_extension'")
        key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        con.execute(
            f"CREATE SECRET (TYPE s3, KEY_ID '{key}', SECRET '{secret}', ENDPOINT '{endpoint}', "
            "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
        )
    joins, selects = [], []
    for i, (view, keys, features) in enumerate(VIEWS):
        alias = f"v{i}"
        key_list = ", ".join(keys)
        dedup = (
            f"(SELECT * FROM read_parquet('{sources}/{view}.parquet') "
            f"QUALIFY row_number() OVER (PARTITION BY {key_list}, event_timestamp "
            f"ORDER BY created DESC) = 1)"
        )
        on = " AND ".join(f"e.{k} = {alias}.{k}" for k in keys)
        joins.append(
            f"ASOF LEFT JOIN {dedup} {alias} ON {on} AND e.event_timestamp >= {alias}.event_timestamp"
        )
        selects += [f"{alias}.{f}" for f in features]
    query = (
        f"SELECT e.*, {', '.join(selects)} FROM read_parquet('{data}/entities.parquet') e "
        + " ".join(joins)
        + " ORDER BY e.label"
    )
    start = time.perf_counter()
    table = con.execute(query).to_arrow_table()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import pyarrow.parquet as pq

    pq.write_table(table, out)
    print(json.dumps({"seconds": seconds, "rows": table.num_rows, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()
