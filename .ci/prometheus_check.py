"""Parses a running process's /metrics with the official Prometheus client library's
text-format parser and checks the families Backtrack promises.

Usage: python prometheus_check.py service|node http://127.0.0.1:PORT/metrics
"""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

EXPECTED = {
    "service": {
        "backtrack_http_requests": "counter",
        "backtrack_http_request_duration_seconds": "histogram",
        "backtrack_jobs": "gauge",
        "backtrack_clusters": "gauge",
        "backtrack_change_records_creation_rate": "gauge",
        "backtrack_change_records_stored": "gauge",
        "backtrack_window_actual_minutes": "gauge",
        "backtrack_window_alert": "gauge",
    },
    "node": {
        "backtrack_node_log_bytes": "gauge",
        "backtrack_node_log_segments": "gauge",
        "backtrack_node_log_records": "counter",
        "backtrack_node_log_syncs": "counter",
        "backtrack_node_log_flush_seconds": "counter",
        "backtrack_node_log_failed": "gauge",
        "backtrack_node_disk_full": "gauge",
        "backtrack_node_volumes": "gauge",
        "backtrack_volume_change_records_created": "counter",
        "backtrack_volume_change_records_stored": "gauge",
        "backtrack_volume_window_seconds": "gauge",
        "backtrack_volume_actual_window_seconds": "gauge",
        "backtrack_volume_bytes_on_disk": "gauge",
        "backtrack_volume_open_transactions": "gauge",
    },
}


def main(process: str, url: str) -> None:
    text = urllib.request.urlopen(url).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in EXPECTED[process].items():
        assert name in families, f"missing family {name}; have {sorted(families)}"
        assert families[name].type == kind, f"{name} is a {families[name].type}, not a {kind}"
    if process == "service":
        requests = families["backtrack_http_requests"].samples
        assert requests and all(s.value >= 1 for s in requests), requests
        buckets = [
            s
            for s in families["backtrack_http_request_duration_seconds"].samples
            if s.name.endswith("_bucket")
        ]
        assert any(s.labels.get("le") == "+Inf" for s in buckets), buckets
    else:
        stored = families["backtrack_volume_change_records_stored"].samples
        assert any(s.labels.get("volume") for s in stored), stored
    samples = sum(len(f.samples) for f in families.values())
    print(f"{process} /metrics: {len(families)} families, {samples} samples, parsed by prometheus_client")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
