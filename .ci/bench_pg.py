"""Benchmark: a cluster's PostgreSQL endpoint against the PostgreSQL server at 127.0.0.1:5432
(its default durability: synchronous_commit on, fsync), side by side in one run with one
client, pgbench, running the same custom scripts (-n -f): single-row autocommit inserts, and
point selects by primary key over 10,000 rows, with 1 and with 8 connections to one
database. Then the RDS Data API's ExecuteStatement through the control plane against the
same statement sent straight to the storage node's HTTP API, with wrk, at 1 and 8
connections; and, for the cost of one more hop by itself, the same statement to the node
through a TCP relay that does nothing but copy bytes (socat).

usage: bench_pg.py BACKTRACK_SERVICE [SECONDS]

(The storage node is the service binary's `node` command, as the local nodes are.)

Goals (issue 16): inserts and point selects at least 1.0x PostgreSQL at 1 and 8
connections; the Data API through the control plane at least 0.8x of straight to the node.
No figure is asserted: this machine is shared and noisy. The node's own figures (commits per
durable write) are printed from its /metrics, as is the disk's flush rate measured alone.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SERVICE = sys.argv[1]
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
TOKEN = "bench-token"
USER, PASSWORD, DATABASE = "bench", "bench-Pass-1", "bench"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
ROWS = 10_000
SECRET = "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench"

SCRIPTS = {
    "insert": "INSERT INTO bench_rows (v) VALUES ('a row of some forty bytes of text, say');\n",
    "select": f"\\set id random(1, {ROWS})\nSELECT v FROM bench_rows WHERE id = :id;\n",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None, method="POST", headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {url}: {e.code} {e.read().decode()}")


def wait_for(url):
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def psql(dsn, sql, password=None):
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql], env=env,
                   check=True, stdout=subprocess.DEVNULL)


def pgbench(dsn, script, clients, password=None):
    env = {**os.environ, **({"PGPASSWORD": password} if password else {})}
    out = subprocess.run(["pgbench", "-n", "-f", script, "-c", str(clients), "-j",
                          str(min(clients, 2)), "-T", str(SECONDS), dsn], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"pgbench {dsn} {script}: {out.stdout}{out.stderr}")
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if failed and int(failed.group(1)) > 0:
        raise SystemExit(f"pgbench {dsn} {script}: failures\n{out.stdout}")
    return float(re.search(r"tps = ([\d.]+) \(without initial", out.stdout).group(1))


def wrk(url, body, connections, headers):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write("wrk.method = \"POST\"\nwrk.body = %s\n" % json.dumps(json.dumps(body)))
    for name, value in {"content-type": "application/json", **headers}.items():
        script.write('wrk.headers["%s"] = "%s"\n' % (name, value))
    script.close()
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections),
                          "-d", f"{SECONDS}s", "-s", script.name, url],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def node_counters(node_url):
    request = urllib.request.Request(node_url + "/metrics",
                                     headers={"authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    def value(name):
        found = re.search(rf"^{name}(?:{{[^}}]*}})? ([\d.e+]+)$", text, re.M)
        return float(found.group(1)) if found else 0.0
    return value("backtrack_node_log_records_total"), value("backtrack_node_log_syncs_total")


def disk_flushes_per_second(directory):
    """What the disk alone gives: 4 KiB appended and fdatasync'd, one after another."""
    path = os.path.join(directory, "flush-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    block = b"x" * 4096
    started, n = time.perf_counter(), 0
    while time.perf_counter() - started < 3:
        os.write(fd, block)
        os.fdatasync(fd)
        n += 1
    os.close(fd)
    os.remove(path)
    return n / (time.perf_counter() - started)


def main():
    work = tempfile.mkdtemp(prefix="bench-pg-", dir=os.environ.get("BENCH_DIR"))
    node_port, pg_port, service_port = free_port(), free_port(), free_port()
    node_url, base = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{service_port}"
    quiet = {**os.environ, "RUST_LOG": "warn"}
    log = open(os.path.join(work, "log"), "w")
    processes = [
        subprocess.Popen([SERVICE, "node", "--listen", f"127.0.0.1:{node_port}", "--pg-listen",
                          f"127.0.0.1:{pg_port}", "--token", TOKEN, "--data-dir",
                          os.path.join(work, "node")], stdout=log, stderr=log, env=quiet),
        subprocess.Popen([SERVICE, "serve", "--listen", f"127.0.0.1:{service_port}",
                          "--data-dir", os.path.join(work, "cp"), "--node",
                          f"bench={node_url}", "--node-token", TOKEN], stdout=log,
                         stderr=log, env=quiet),
    ]
    try:
        wait_for(node_url + "/healthz")
        wait_for(base + "/readyz")
        create = {"DBClusterIdentifier": "bench", "BacktrackWindow": 3600,
                  "DatabaseName": DATABASE, "MasterUsername": USER, "MasterUserPassword": PASSWORD}
        for _ in range(100):
            try:
                cluster = call(base + "/v1/clusters", create)["DBCluster"]
                break
            except SystemExit as e:
                # Until the control plane has seen the node healthy.
                if "InsufficientStorageClusterCapacity" not in str(e):
                    raise
                time.sleep(0.1)
        while cluster["Status"] != "available" or not cluster.get("Port"):
            time.sleep(0.05)
            cluster = call(base + "/v1/clusters/bench", method="GET")["DBCluster"]
        ours = f"postgresql://{USER}@{cluster['Endpoint']}:{cluster['Port']}/{DATABASE}"
        volume = call(node_url + "/v1/volumes", method="GET",
                      headers={"authorization": f"Bearer {TOKEN}"})
        volume_id = volume["volumes"][0]["volume_id"]
        psql(ours, "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, v TEXT)", PASSWORD)
        psql(ours, f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
                   f"{ROWS}) INSERT INTO bench_rows (v) SELECT 'row ' || i FROM n", PASSWORD)
        psql(f"{POSTGRES}/postgres", "DROP DATABASE IF EXISTS backtrack_bench")
        psql(f"{POSTGRES}/postgres", "CREATE DATABASE backtrack_bench")
        theirs = f"{POSTGRES}/backtrack_bench"
        psql(theirs, "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, v TEXT)")
        psql(theirs, f"INSERT INTO bench_rows (v) SELECT 'row ' || i FROM "
                     f"generate_series(1, {ROWS}) i")
        scripts = {}
        for name, text in SCRIPTS.items():
            scripts[name] = os.path.join(work, f"{name}.sql")
            with open(scripts[name], "w") as f:
                f.write(text)

        print(f"pgbench -n -f, {SECONDS} s per run, transactions/s "
              f"(the disk alone: {disk_flushes_per_second(work):.0f} fdatasyncs/s):")
        for name in SCRIPTS:
            for clients in (1, 8):
                before = node_counters(node_url)
                ours_tps = pgbench(ours, scripts[name], clients, PASSWORD)
                after = node_counters(node_url)
                theirs_tps = pgbench(theirs, scripts[name], clients)
                records, syncs = after[0] - before[0], after[1] - before[1]
                per_sync = f"; {records / syncs:.1f} commits per durable write" if syncs else ""
                print(f"  {name:>6}, {clients} connection(s): Backtrack {ours_tps:8.0f}, "
                      f"PostgreSQL {theirs_tps:8.0f}: {ours_tps / theirs_tps:.2f}x{per_sync}")

        print(f"Data API ExecuteStatement (a point select), wrk {SECONDS} s per run, requests/s:")
        select = "SELECT v FROM bench_rows WHERE id = 4242"
        arn = f"arn:aws:rds:us-east-1:000000000000:cluster:bench"
        # What one more hop costs by itself: the same calls to the node through socat, which
        # only copies bytes between two TCP connections (no HTTP, no work).
        relay_port = free_port()
        relay = subprocess.Popen(["socat", f"TCP-LISTEN:{relay_port},bind=127.0.0.1,reuseaddr,fork",
                                  f"TCP:127.0.0.1:{node_port}"])
        processes.append(relay)
        wait_for(f"http://127.0.0.1:{relay_port}/healthz")
        node_call = (f"/v1/volumes/{volume_id}/execute", {"sql": select},
                     {"authorization": f"Bearer {TOKEN}"})
        for connections in (1, 8):
            through = wrk(base + "/Execute", {"resourceArn": arn, "secretArn": SECRET,
                                              "sql": select}, connections, {})
            straight = wrk(node_url + node_call[0], node_call[1], connections, node_call[2])
            relayed = wrk(f"http://127.0.0.1:{relay_port}" + node_call[0], node_call[1],
                          connections, node_call[2])
            print(f"  {connections} connection(s): through the control plane {through:8.0f}, "
                  f"straight to the node {straight:8.0f}: {through / straight:.2f}x "
                  f"(through a bare TCP relay: {relayed:8.0f}, {relayed / straight:.2f}x)")
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


main()
