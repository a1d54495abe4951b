"""boto3 (botocore) against the running service, with access keys configured.

usage: aws_boto3.py URL ACCESS_KEY_ID SECRET

The scenario an RDS user runs, through botocore's own serializers, parsers, waiters,
paginators and exception classes: create (with tags), the db_cluster_available waiter,
paginating 25+ clusters, modify, a Data API session (statements, a batch, transactions,
typed values), the accident and BacktrackDBCluster, DescribeDBClusterBacktracks with
filters until completed, DescribeEvents, tags, delete and the db_cluster_deleted waiter, and
the typed exceptions. botocore's parsed answers are compared with the REST API's JSON for
the same objects. Then the same calls with a wrong secret, an unknown key and no signature:
each gets 403 with its code, and nothing it asked for happens.
"""
import datetime
import json
import sys
import time
import uuid

import boto3
import botocore
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

URL, KEY, SECRET = sys.argv[1:4]
REGION = "us-east-1"
ACCOUNT = "000000000000"
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:local"
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


def client(service, key=KEY, secret=SECRET, config=NO_RETRIES):
    return boto3.client(service, endpoint_url=URL, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret, config=config)


rds, data = client("rds"), client("rds-data")


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"  ok: {what}")


def rest(method, path, body=None, key=KEY, secret=SECRET):
    """A REST call, signed by botocore's SigV4 signer."""
    request = AWSRequest(method=method, url=URL + path,
                         data=json.dumps(body) if body is not None else None,
                         headers={"content-type": "application/json"} if body is not None else {})
    SigV4Auth(Credentials(key, secret), "rds", REGION).add_auth(request)
    import urllib.request
    req = urllib.request.Request(URL + path, data=request.body, method=method,
                                 headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def code_of(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e
    return None, 200, None


def iso(value):
    """A botocore datetime as the REST API writes it (UTC, milliseconds)."""
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
            f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, list):
        return [iso(v) for v in value]
    if isinstance(value, dict):
        return {k: iso(v) for k, v in value.items() if k != "ResponseMetadata"}
    return value


def same_as_rest(parsed, rest_json, what, ignore=()):
    """botocore's parse of the XML reply equals the REST API's JSON (members RDS has)."""
    parsed = iso(parsed)
    rest_json = {k: v for k, v in rest_json.items() if k in parsed or k not in ignore}
    differing = {k: (parsed.get(k), rest_json.get(k)) for k in set(parsed) | set(rest_json)
                 if k not in ignore and parsed.get(k) != rest_json.get(k)}
    check(not differing, f"{what}: botocore's parse of the XML equals the REST JSON {differing or ''}")


def sql(arn, text, **kw):
    return data.execute_statement(resourceArn=arn, secretArn=SECRET_ARN, sql=text, **kw)


def main():
    print("boto3", boto3.__version__, "botocore", botocore.__version__)
    created = rds.create_db_cluster(
        DBClusterIdentifier="py-shop", Engine="aurora-mysql", BacktrackWindow=86400,
        MasterUsername="admin", MasterUserPassword="not-kept-anywhere",
        VpcSecurityGroupIds=["sg-1", "sg-2"], EnableCloudwatchLogsExports=[],
        Tags=[{"Key": "team", "Value": "payments"}, {"Key": "env", "Value": "ci"}])["DBCluster"]
    arn = created["DBClusterArn"]
    check(created["DBClusterIdentifier"] == "py-shop" and created["BacktrackWindow"] == 86400,
          "CreateDBCluster answers the cluster")
    check(created["TagList"] == [{"Key": "team", "Value": "payments"}, {"Key": "env", "Value": "ci"}],
          "with its tags")
    rds.get_waiter("db_cluster_available").wait(
        DBClusterIdentifier="py-shop", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    check(True, "the db_cluster_available waiter succeeds")
    # Live figures and the status move on between two calls; the rest must be equal.
    moving = ("Status", "EarliestBacktrackTime", "BacktrackConsumedChangeRecords")
    same_as_rest(created, rest("GET", "/v1/clusters/py-shop")[1]["DBCluster"], "CreateDBCluster",
                 ignore=moving)

    for i in range(26):
        rds.create_db_cluster(DBClusterIdentifier=f"py-page-{i:02d}", Engine="aurora-mysql")
    pages = list(rds.get_paginator("describe_db_clusters").paginate(
        PaginationConfig={"PageSize": 20}))
    ids = [c["DBClusterIdentifier"] for p in pages for c in p["DBClusters"]]
    check(len(pages) >= 2 and len(ids) == len(set(ids)) >= 27
          and all(f"py-page-{i:02d}" in ids for i in range(26)),
          f"the paginator walks {len(ids)} clusters in {len(pages)} pages, each once")
    check("Marker" not in pages[-1], "the last page has no Marker")
    filtered = rds.describe_db_clusters(Filters=[
        {"Name": "db-cluster-id", "Values": ["py-page-03", f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:py-page-04"]}])
    check([c["DBClusterIdentifier"] for c in filtered["DBClusters"]] == ["py-page-03", "py-page-04"],
          "DescribeDBClusters filters by id and ARN")

    modified = rds.modify_db_cluster(DBClusterIdentifier="py-shop", BacktrackWindow=7200,
                                     DeletionProtection=True, ApplyImmediately=True)["DBCluster"]
    check(modified["BacktrackWindow"] == 7200 and modified["DeletionProtection"] is True,
          "ModifyDBCluster changes the window and deletion protection")
    same_as_rest(modified, rest("GET", "/v1/clusters/py-shop")[1]["DBCluster"], "ModifyDBCluster",
                 ignore=moving)
    rds.get_waiter("db_cluster_available").wait(
        DBClusterIdentifier="py-shop", WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    # A Data API session: DDL, a batch with typed parameters, transactions, typed results.
    sql(arn, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, "
             "price REAL, note TEXT, img BLOB)")
    batch = data.batch_execute_statement(
        resourceArn=arn, secretArn=SECRET_ARN,
        sql="INSERT INTO orders (item, qty, price, note, img) VALUES (:item, :qty, :price, :note, :img)",
        parameterSets=[
            [{"name": "item", "value": {"stringValue": item}}, {"name": "qty", "value": {"longValue": qty}},
             {"name": "price", "value": {"doubleValue": price}}, {"name": "note", "value": {"isNull": True}},
             {"name": "img", "value": {"blobValue": bytes([qty, 0, 255])}}]
            for item, qty, price in [("apple", 3, 0.5), ("pear", 2, 0.75), ("fig", 7, 1.25)]])
    check(len(batch["updateResults"]) == 3, "BatchExecuteStatement runs three parameter sets")
    tx = data.begin_transaction(resourceArn=arn, secretArn=SECRET_ARN)["transactionId"]
    sql(arn, "INSERT INTO orders (item, qty) VALUES ('plum', 1)", transactionId=tx)
    rolled = data.rollback_transaction(resourceArn=arn, secretArn=SECRET_ARN, transactionId=tx)
    check(rolled["transactionStatus"] == "Rollback Complete", "RollbackTransaction")
    tx = data.begin_transaction(resourceArn=arn, secretArn=SECRET_ARN)["transactionId"]
    sql(arn, "UPDATE orders SET note = 'ripe' WHERE item = 'fig'", transactionId=tx)
    committed = data.commit_transaction(resourceArn=arn, secretArn=SECRET_ARN, transactionId=tx)
    check(committed["transactionStatus"] == "Transaction Committed", "CommitTransaction")
    rows = sql(arn, "SELECT item, qty, price, note, img FROM orders ORDER BY id",
               includeResultMetadata=True)
    check(rows["records"][0] == [{"stringValue": "apple"}, {"longValue": 3}, {"doubleValue": 0.5},
                                 {"isNull": True}, {"blobValue": bytes([3, 0, 255])}]
          and rows["records"][2][3] == {"stringValue": "ripe"} and len(rows["records"]) == 3,
          "typed values come back typed (string, long, double, null, blob)")
    check([c["name"] for c in rows["columnMetadata"]] == ["item", "qty", "price", "note", "img"],
          "with column metadata")

    # The accident, and the undo.
    time.sleep(1.1)
    before = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(1.1)
    sql(arn, "DELETE FROM orders")
    check(sql(arn, "SELECT count(*) FROM orders")["records"][0][0]["longValue"] == 0, "the accident")
    started = rds.backtrack_db_cluster(DBClusterIdentifier="py-shop", BacktrackTo=before)
    bt = started["BacktrackIdentifier"]
    check(started["Status"] == "pending", "BacktrackDBCluster answers a pending backtrack")
    same_as_rest(started, rest("GET", f"/v1/clusters/py-shop/backtracks/{bt}")[1],
                 "BacktrackDBCluster", ignore=("Status", "BacktrackedFrom", "StatusReason"))
    for _ in range(200):
        found = rds.describe_db_cluster_backtracks(
            DBClusterIdentifier="py-shop",
            Filters=[{"Name": "db-cluster-backtrack-id", "Values": [bt]}])["DBClusterBacktracks"]
        if found and found[0]["Status"] == "completed":
            break
        time.sleep(0.1)
    check(found and found[0]["Status"] == "completed", "DescribeDBClusterBacktracks until completed")
    done = rds.describe_db_cluster_backtracks(
        DBClusterIdentifier="py-shop", Filters=[
            {"Name": "db-cluster-backtrack-status", "Values": ["completed", "failed"]}])
    check([b["BacktrackIdentifier"] for b in done["DBClusterBacktracks"]] == [bt],
          "the status filter finds it")
    check(sql(arn, "SELECT count(*) FROM orders")["records"][0][0]["longValue"] == 3,
          "the rows are back")
    rds.get_waiter("db_cluster_available").wait(
        DBClusterIdentifier="py-shop", WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    # botocore's parse of each listing equals the REST API's JSON for the same objects.
    cluster = rds.describe_db_clusters(DBClusterIdentifier="py-shop")["DBClusters"][0]
    status, rest_cluster = rest("GET", "/v1/clusters/py-shop")
    same_as_rest(cluster, rest_cluster["DBCluster"], "DescribeDBClusters",
                 ignore=("BacktrackConsumedChangeRecords", "EarliestBacktrackTime"))
    status, rest_bt = rest("GET", f"/v1/clusters/py-shop/backtracks/{bt}")
    same_as_rest(found[0], rest_bt, "DescribeDBClusterBacktracks", ignore=("StatusReason",))
    events = [e for page in rds.get_paginator("describe_events").paginate(
        SourceType="db-cluster", SourceIdentifier="py-shop", Duration=60) for e in page["Events"]]
    status, rest_events = rest("GET", "/v1/events?SourceType=db-cluster&SourceIdentifier=py-shop&Duration=60")
    check(len(events) == len(rest_events["Events"]) >= 4, f"DescribeEvents: {len(events)} events")
    for parsed, json_event in zip(events, rest_events["Events"]):
        same_as_rest(parsed, json_event, "an event", ignore=("EventId",))
    check(any("completed" in e["Message"] for e in events), "a backtrack-completed event")
    categories = rds.describe_event_categories(SourceType="db-cluster")["EventCategoriesMapList"]
    check("backtrack" in categories[0]["EventCategories"], "DescribeEventCategories")

    # A presigned URL (botocore signs the operation's POST, its parameters in the query).
    presigned = rds.generate_presigned_url("describe_db_clusters",
                                           Params={"DBClusterIdentifier": "py-shop"}, ExpiresIn=60)
    import urllib.request
    with urllib.request.urlopen(urllib.request.Request(presigned, method="POST", data=b"")) as r:
        check(r.status == 200 and b"<DBClusterIdentifier>py-shop</DBClusterIdentifier>" in r.read(),
              "a presigned URL from generate_presigned_url is served")
    tampered = presigned.replace("py-shop", "py-page-01")
    try:
        urllib.request.urlopen(urllib.request.Request(tampered, method="POST", data=b""))
        raise SystemExit("FAILED: a presigned URL with changed parameters was served")
    except urllib.error.HTTPError as e:
        check(e.code == 403 and b"SignatureDoesNotMatch" in e.read(), "a changed presigned URL is refused")

    # Tags by ARN.
    rds.add_tags_to_resource(ResourceName=arn, Tags=[{"Key": "owner", "Value": "sre"}])
    rds.remove_tags_from_resource(ResourceName=arn, TagKeys=["env"])
    tags = rds.list_tags_for_resource(ResourceName=arn)["TagList"]
    check(tags == [{"Key": "team", "Value": "payments"}, {"Key": "owner", "Value": "sre"}],
          "tags added, listed and removed")
    check(rest("GET", "/v1/clusters/py-shop")[1]["DBCluster"]["TagList"] == tags,
          "the REST API shows the same tags")

    # The typed exceptions.
    def raises(exception, call, what):
        try:
            call()
        except exception as e:
            check(True, f"{what} raises {type(e).__name__}")
            return
        raise SystemExit(f"FAILED: {what} did not raise {exception}")

    raises(rds.exceptions.DBClusterNotFoundFault,
           lambda: rds.describe_db_clusters(DBClusterIdentifier="py-nosuch"), "an unknown cluster")
    raises(rds.exceptions.DBClusterAlreadyExistsFault,
           lambda: rds.create_db_cluster(DBClusterIdentifier="py-shop", Engine="aurora-mysql"),
           "a second py-shop")
    raises(rds.exceptions.InvalidDBClusterStateFault,
           lambda: rds.backtrack_db_cluster(DBClusterIdentifier="py-page-00", BacktrackTo=before),
           "a backtrack of a cluster without a window")
    raises(rds.exceptions.DBClusterBacktrackNotFoundFault,
           lambda: rds.describe_db_cluster_backtracks(DBClusterIdentifier="py-shop",
                                                      BacktrackIdentifier=str(uuid.uuid4())),
           "an unknown backtrack")
    code, status, _ = code_of(lambda: rds.create_db_cluster(
        DBClusterIdentifier="py-bad", Engine="aurora-mysql", BacktrackWindow=999999))
    check((code, status) == ("InvalidParameterValue", 400), "a window over 72 hours is InvalidParameterValue")
    code, status, _ = code_of(lambda: rds.delete_db_cluster(DBClusterIdentifier="py-shop",
                                                            SkipFinalSnapshot=True))
    check((code, status) == ("InvalidParameterCombination", 400), "deletion protection is honoured")

    rds.modify_db_cluster(DBClusterIdentifier="py-shop", DeletionProtection=False, ApplyImmediately=True)
    before_delete = rest("GET", "/v1/clusters/py-shop")[1]["DBCluster"]
    deleted = rds.delete_db_cluster(DBClusterIdentifier="py-shop", SkipFinalSnapshot=True)
    check(deleted["DBCluster"]["Status"] == "deleting", "DeleteDBCluster")
    same_as_rest(deleted["DBCluster"], before_delete, "DeleteDBCluster", ignore=moving)
    rds.get_waiter("db_cluster_deleted").wait(
        DBClusterIdentifier="py-shop", WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    check(True, "the db_cluster_deleted waiter succeeds")
    for i in range(26):
        rds.delete_db_cluster(DBClusterIdentifier=f"py-page-{i:02d}", SkipFinalSnapshot=True)

    refusals()


def refusals():
    """Wrong secret, unknown key, no signature: 403 with the code, and nothing done."""
    rds.create_db_cluster(DBClusterIdentifier="py-kept", Engine="aurora-mysql", BacktrackWindow=3600)
    kept_arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:py-kept"
    sql(kept_arn, "CREATE TABLE t (x INTEGER)")
    unsigned = Config(signature_version=UNSIGNED, retries={"max_attempts": 1})
    suites = [
        ("SignatureDoesNotMatch", dict(key=KEY, secret="not-the-secret")),
        ("InvalidClientTokenId", dict(key="AKIDNOBODYKNOWS", secret=SECRET)),
        ("MissingAuthenticationToken", dict(config=unsigned)),
    ]
    for code, how in suites:
        bad_rds, bad_data = client("rds", **how), client("rds-data", **how)
        name = f"py-evil-{code.lower()}"[:40]
        calls = {
            "CreateDBCluster": lambda: bad_rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-mysql"),
            "DescribeDBClusters": lambda: bad_rds.describe_db_clusters(),
            "DeleteDBCluster": lambda: bad_rds.delete_db_cluster(DBClusterIdentifier="py-kept", SkipFinalSnapshot=True),
            "BacktrackDBCluster": lambda: bad_rds.backtrack_db_cluster(
                DBClusterIdentifier="py-kept", BacktrackTo=datetime.datetime.now(datetime.timezone.utc)),
            "AddTagsToResource": lambda: bad_rds.add_tags_to_resource(
                ResourceName=kept_arn, Tags=[{"Key": "evil", "Value": "1"}]),
            "ExecuteStatement": lambda: bad_data.execute_statement(
                resourceArn=kept_arn, secretArn=SECRET_ARN, sql="DROP TABLE t"),
        }
        for action, call in calls.items():
            got = code_of(call)[:2]
            check(got == (code, 403), f"{code}: {action} refused with 403 {got}")
        if code != "MissingAuthenticationToken":
            status, body = rest("POST", "/v1/clusters", {"DBClusterIdentifier": name}, **{
                k: v for k, v in how.items() if k in ("key", "secret")})
            check((status, body["Error"]["Code"]) == (403, code), f"{code}: the REST API too")
        check(code_of(lambda: rds.describe_db_clusters(DBClusterIdentifier=name))[0]
              == "DBClusterNotFoundFault", f"{code}: the cluster was not created")
    kept = rds.describe_db_clusters(DBClusterIdentifier="py-kept")["DBClusters"][0]
    check(kept["Status"] == "available" and kept["TagList"] == [], "py-kept: not deleted, not tagged")
    check(rds.describe_db_cluster_backtracks(DBClusterIdentifier="py-kept")["DBClusterBacktracks"] == [],
          "py-kept: not backtracked")
    check(sql(kept_arn, "SELECT count(*) FROM t")["records"][0][0]["longValue"] == 0,
          "py-kept: its table was not dropped")
    rds.delete_db_cluster(DBClusterIdentifier="py-kept", SkipFinalSnapshot=True)
    print("boto3 scenario passed")


main()
