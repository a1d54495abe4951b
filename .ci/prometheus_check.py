"""Parses a running service's /metrics with the official Prometheus client library's
text-format parser and checks the families Backtrack promises.

Usage: python prometheus_check.py http://127.0.0.1:PORT/metrics
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

EXPECTED = {
    "backtrack_http_requests": "counter",
    "backtrack_http_request_duration_seconds": "histogram",
    "backtrack_jobs": "gauge",
    "backtrack_clusters": "gauge",
    "backtrack_change_records_creation_rate": "gauge",
    "backtrack_change_records_stored": "gauge",
    "backtrack_window_actual_minutes": "gauge",
    "backtrack_window_alert": "gauge",
}


def main(url: str) -> None:
    text = urllib.request.urlopen(url).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED.items():
        assert name in families, f"missing family {name}; have {sorted(families)}"
        assert families[name].type == kind, f"{name} is a {families[name].type}, not a {kind}"
    requests = families["backtrack_http_requests"].samples
    assert requests and all(s.value >= 1 for s in requests), requests
    buckets = [s for s in families["backtrack_http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert any(s.labels.get("le") == "+Inf" for s in buckets), buckets
    samples = sum(len(f.samples) for f in families.values())
    print(f"/metrics: {len(families)} families, {samples} samples, parsed by prometheus_client")


if __name__ == "__main__":
    main(sys.argv[1])
