"""Scrapes a Quiver `/metrics` URL the way Prometheus does and parses it with the Prometheus
client library's own parser (so the exposition must be valid), optionally after reading a
training set from Quiver's Arrow Flight port with pyarrow.

Usage: scrape_metrics.py METRICS_URL [FLIGHT_URL TICKET_JSON]

Prints one JSON object: "training_rows" (rows of the training set, when one was asked for)
and "samples": every sample as {"name", "labels", "value"}.
"""

import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    url = sys.argv[1]
    out = {}
    if len(sys.argv) > 3:
        import pyarrow.flight as flight

        client = flight.connect(sys.argv[2])
        table = client.do_get(flight.Ticket(sys.argv[3].encode())).read_all()
        out["training_rows"] = table.num_rows
    with urllib.request.urlopen(url, timeout=30) as response:
        content_type = response.headers.get("Content-Type", "")
        text = response.read().decode()
    out["content_type"] = content_type
    out["samples"] = [
        {"name": s.name, "labels": s.labels, "value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
