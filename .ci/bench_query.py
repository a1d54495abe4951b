"""Benchmark: DescribeDBClusters over the RDS query protocol, Backtrack vs moto_server, and
the cost of SigV4 verification, side by side in one run with one load tool (wrk).

usage: bench_query.py BACKTRACK_SERVICE_BINARY MOTO_SERVER_BINARY [SECONDS]

Three servers on this machine, each holding 20 clusters: Backtrack with an access key,
Backtrack without keys, and moto_server. wrk posts the same signed DescribeDBClusters form
to each (the signature is valid for 15 minutes, so one signed request is replayed; moto
does not check it), one connection at a time and then 8 at once. It prints requests/s and
the ratios: Backtrack / moto (goal: at least 50x) and signed / unsigned (the cost of
verifying). No figure is asserted: this machine is shared and noisy.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE, MOTO = sys.argv[1:3]
SECONDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
KEY, SECRET = "AKIDBENCH", "bench-secret"
BODY = "Action=DescribeDBClusters&Version=2014-10-31"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url, process):
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url}: no answer")


def start(args, health, env=None):
    log = open(tempfile.mktemp(suffix=".log"), "w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    wait_until_up(health, process)
    return process


def signed_headers(url):
    request = AWSRequest(method="POST", url=url + "/", data=BODY, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(KEY, SECRET), "rds", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def wrk(url, connections, headers):
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write('wrk.method = "POST"\nwrk.body = "%s"\n' % BODY)
    for name, value in headers.items():
        script.write('wrk.headers["%s"] = "%s"\n' % (name, value))
    script.close()
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections),
                          "-d", f"{SECONDS}s", "-s", script.name, url + "/"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    return rps


def main():
    data = tempfile.mkdtemp(prefix="bench-query-")
    ports = {name: free_port() for name in ("signed", "open", "moto")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    servers = []
    try:
        for name, extra in (("signed", ["--access-key", f"{KEY}:{SECRET}"]), ("open", [])):
            servers.append(start([SERVICE, "serve", "--listen", f"127.0.0.1:{ports[name]}",
                                  "--data-dir", os.path.join(data, name)] + extra,
                                 urls[name] + "/healthz",
                                 env={**os.environ, "RUST_LOG": "warn"}))
        servers.append(start([MOTO, "-H", "127.0.0.1", "-p", str(ports["moto"])],
                             urls["moto"] + "/moto-api/"))
        for name, url in urls.items():
            rds = boto3.client("rds", endpoint_url=url, region_name="us-east-1",
                               aws_access_key_id=KEY, aws_secret_access_key=SECRET)
            for i in range(20):
                rds.create_db_cluster(DBClusterIdentifier=f"bench-{i:02d}", Engine="aurora-mysql",
                                      MasterUsername="admin", MasterUserPassword="password123")
            assert len(rds.describe_db_clusters()["DBClusters"]) == 20
        results = {}
        for connections in (1, 8):
            for name, url in urls.items():
                results[(name, connections)] = wrk(url, connections, signed_headers(url))
        print(f"DescribeDBClusters (20 clusters), wrk {SECONDS} s per run, requests/s:")
        print(f"{'':28}{'1 connection':>14}{'8 connections':>15}")
        label = {"signed": "Backtrack, signed (SigV4)", "open": "Backtrack, no keys",
                 "moto": "moto_server"}
        for name in ("signed", "open", "moto"):
            print(f"{label[name]:28}{results[(name, 1)]:>14.0f}{results[(name, 8)]:>15.0f}")
        for connections in (1, 8):
            print(f"{connections} connection(s): Backtrack signed / moto = "
                  f"{results[('signed', connections)] / results[('moto', connections)]:.1f}x "
                  f"(goal 50x); signed / no keys = "
                  f"{results[('signed', connections)] / results[('open', connections)]:.2f}")
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        shutil.rmtree(data, ignore_errors=True)


main()
