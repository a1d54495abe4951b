"""psycopg 3 against a running service: create a cluster with a master user, connect where
DescribeDBClusters says (SCRAM-SHA-256), and run what an application runs: DDL, parameters of
each type (psycopg's own adaptation), a transaction committed and one rolled back, a
savepoint, errors as psycopg's exception classes (SQLSTATEs); then delete the cluster.

usage: pg_psycopg.py http://localhost:8080
"""
import json
import sys
import time
import urllib.request

import psycopg
from psycopg import errors

BASE = sys.argv[1]
PASSWORD = "psycopg-Secret9"


def call(method, path, body=None):
    request = urllib.request.Request(
        BASE + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


call("POST", "/v1/clusters", {"DBClusterIdentifier": "py-shop", "Engine": "aurora-postgresql",
                              "MasterUsername": "app", "MasterUserPassword": PASSWORD})
for _ in range(100):
    cluster = call("GET", "/v1/clusters/py-shop")["DBCluster"]
    if "Port" in cluster and cluster["Status"] == "available":
        break
    time.sleep(0.1)
conninfo = (f"host={cluster['Endpoint']} port={cluster['Port']} dbname={cluster['DatabaseName']} "
            f"user={cluster['MasterUsername']} password={PASSWORD}")

with psycopg.connect(conninfo, autocommit=True) as conn:
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, "
                 "qty INTEGER, data BLOB, ok BOOLEAN)")
    for values in [("apple", 1.25, 3, b"\x00\x01", True), ("pear", None, 2**40, None, False)]:
        conn.execute("INSERT INTO items (name, price, qty, data, ok) VALUES (%s, %s, %s, %s, %s)",
                     values)
    row = conn.execute("SELECT name, price, qty, data, ok FROM items WHERE name = %s",
                       ("apple",)).fetchone()
    assert row == ("apple", 1.25, 3, b"\x00\x01", True), row
    row = conn.execute("SELECT qty, price, ok FROM items WHERE qty > %s", (10,)).fetchone()
    assert row == (2**40, None, False), row
    print("  ok: parameters of each type and typed results")

    # A transaction rolled back leaves nothing; a savepoint undoes only its part.
    with conn.transaction():
        conn.execute("DELETE FROM items")
        raise psycopg.Rollback()
    with conn.transaction():
        conn.execute("INSERT INTO items (name) VALUES (%s)", ("kept",))
        with conn.transaction():
            conn.execute("INSERT INTO items (name) VALUES (%s)", ("undone",))
            raise psycopg.Rollback()
    names = [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id")]
    assert names == ["apple", "pear", "kept"], names
    print("  ok: transactions and savepoints")

    for sql, params, error in [
        ("SELECT * FROM missing", None, errors.UndefinedTable),
        ("INSERT INTO items (id) VALUES (%s)", (1,), errors.UniqueViolation),
        ("SELEKT 1", None, errors.SyntaxError),
    ]:
        try:
            conn.execute(sql, params)
            raise AssertionError(f"{sql} succeeded")
        except error:
            pass
    print("  ok: errors as psycopg's classes")

# psycopg's default: statements in a transaction it begins, committed when the block ends.
with psycopg.connect(conninfo) as conn:
    conn.execute("INSERT INTO items (name) VALUES (%s)", ("committed",))
with psycopg.connect(conninfo) as conn:
    count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    assert count == 4, count
try:
    psycopg.connect(conninfo.replace(PASSWORD, "wrong-Secret9"))
    raise AssertionError("a wrong password connected")
except psycopg.OperationalError as e:
    assert "password authentication failed" in str(e), e
print("  ok: an implicit transaction committed; a wrong password refused")

call("DELETE", "/v1/clusters/py-shop")
print("psycopg", psycopg.__version__, "scenario passed")
