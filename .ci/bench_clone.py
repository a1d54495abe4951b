"""Benchmark: RestoreDBClusterToPointInTime through the control plane, request to
`available`, for sources of 10 MB, 100 MB and 1 GB, side by side in one run with what a
full copy costs: our own `full-copy` restore, and a plain durable copy of a file of the same
size on the same disk. (The node-level figures, and the disk a clone takes, are in
`cargo bench -p backtrack-storage-node --bench engine -- clones`.)

usage: bench_clone.py BACKTRACK_SERVICE_BINARY [MEGABYTES ...]

Goal: copy-on-write under 100 ms at the node (so a little more here, for the HTTP hops and
the metadata transaction), the 1 GB figure within 2x of the 10 MB one. No figure is
asserted: this machine is shared and noisy.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVICE = sys.argv[1]
SIZES = [int(a) for a in sys.argv[2:]] or [10, 100, 1000]
ROW = 1000
SECRET = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def sql(base, cluster, text):
    status, body = call(base, "POST", "/Execute", {
        "resourceArn": f"arn:aws:rds:us-east-1:000000000000:cluster:{cluster}",
        "secretArn": SECRET, "sql": text})
    if status != 200:
        raise SystemExit(f"{text[:60]}: {status} {body}")
    return body


def available(base, cluster, answer):
    """Milliseconds are taken by the caller; this waits if the answer was not final yet."""
    status = answer["DBCluster"]["Status"]
    while status != "available":
        if status not in ("creating",):
            raise SystemExit(f"{cluster}: {status}")
        time.sleep(0.005)
        status = call(base, "GET", f"/v1/clusters/{cluster}")[1]["DBCluster"]["Status"]


def restore(base, source, name, restore_type):
    started = time.perf_counter()
    status, body = call(base, "POST", f"/v1/clusters/{source}/restore", {
        "DBClusterIdentifier": name, "RestoreType": restore_type,
        "UseLatestRestorableTime": True, "BacktrackWindow": 3600})
    if status != 201:
        raise SystemExit(f"restore {name}: {status} {body}")
    available(base, name, body)
    return (time.perf_counter() - started) * 1000


def file_copy_ms(directory, size):
    source = os.path.join(directory, "plain.db")
    with open(source, "wb") as f:
        for _ in range(size // (1 << 20) + 1):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
    times = []
    for i in range(3):
        target = os.path.join(directory, f"copy-{i}.db")
        started = time.perf_counter()
        shutil.copyfile(source, target)
        with open(target, "rb") as f:
            os.fsync(f.fileno())
        times.append((time.perf_counter() - started) * 1000)
        os.remove(target)
    os.remove(source)
    return statistics.median(times)


def main():
    work = tempfile.mkdtemp(prefix="bench-clone-", dir=os.environ.get("BENCH_DIR"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(work, "service.log"), "w")
    process = subprocess.Popen([SERVICE, "serve", "--listen", f"127.0.0.1:{port}",
                                "--data-dir", os.path.join(work, "data")],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        print("RestoreDBClusterToPointInTime, request to available, through the control plane:")
        first = None
        for mb in SIZES:
            source = f"src-{mb}"
            status, body = call(base, "POST", "/v1/clusters",
                                {"DBClusterIdentifier": source, "BacktrackWindow": 3600})
            assert status == 201, body
            sql(base, source, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
            rows = mb * 1_000_000 // ROW
            loaded = 0
            while loaded < rows:
                n = min(20_000, rows - loaded)
                sql(base, source, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                    f"FROM n WHERE i < {n}) INSERT INTO t (v) SELECT randomblob({ROW}) FROM n")
                loaded += n
            clones = [restore(base, source, f"{source}-c{i}", "copy-on-write") for i in range(5)]
            clone = statistics.median(clones)
            full = restore(base, source, f"{source}-full", "full-copy")
            copy = file_copy_ms(work, mb * 1_000_000)
            first = first or clone
            print(f"  {mb:>5} MB: copy-on-write {clone:7.1f} ms (median of 5); full-copy "
                  f"{full:8.1f} ms; plain file copy {copy:8.1f} ms ({copy / clone:.0f}x the clone); "
                  f"vs 10 MB: {clone / first:.2f}")
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)


main()
