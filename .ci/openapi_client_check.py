"""Drives a running Backtrack service through a client generated from openapi/openapi.json by
openapi-python-client: create, describe, backtrack, describe backtracks, and a typed error.

Usage: python openapi_client_check.py http://127.0.0.1:PORT
"""

import datetime
import sys
import time
import uuid

from backtrack_client import Client
from backtrack_client.api.backtracks import (
    backtrack_db_cluster,
    describe_db_cluster_backtrack,
    describe_db_cluster_backtracks,
)
from backtrack_client.api.clusters import create_db_cluster, describe_db_cluster, describe_db_clusters
from backtrack_client.models import (
    BacktrackDbClusterRequest,
    CreateDbClusterRequest,
    DbClusterBacktrack,
    DbClusterBacktrackMessage,
    DbClusterMessage,
    DbClusterResult,
    ErrorResponse,
)


def main(url: str) -> None:
    client = Client(base_url=url, raise_on_unexpected_status=True)
    name = f"generated-{uuid.uuid4().hex[:8]}"

    created = create_db_cluster.sync(
        client=client, body=CreateDbClusterRequest(db_cluster_identifier=name, backtrack_window=3600)
    )
    assert isinstance(created, DbClusterResult), created
    assert created.db_cluster.db_cluster_identifier == name
    assert created.db_cluster.status == "available", created.db_cluster.status
    assert created.db_cluster.backtrack_window == 3600

    one = describe_db_cluster.sync(name, client=client)
    assert isinstance(one, DbClusterResult), one
    assert isinstance(one.db_cluster.cluster_create_time, datetime.datetime)
    listed = describe_db_clusters.sync(client=client, max_records=100)
    assert isinstance(listed, DbClusterMessage), listed
    assert name in [c.db_cluster_identifier for c in listed.db_clusters]

    time.sleep(0.2)
    to = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(milliseconds=100)
    accepted = backtrack_db_cluster.sync(name, client=client, body=BacktrackDbClusterRequest(backtrack_to=to))
    assert isinstance(accepted, DbClusterBacktrack), accepted
    assert accepted.status == "pending", accepted.status

    deadline = time.time() + 30
    while True:
        done = describe_db_cluster_backtrack.sync(name, accepted.backtrack_identifier, client=client)
        assert isinstance(done, DbClusterBacktrack), done
        if done.status in ("completed", "failed"):
            break
        assert time.time() < deadline, "the backtrack never finished"
        time.sleep(0.1)
    assert done.status == "completed", done

    page = describe_db_cluster_backtracks.sync(name, client=client, db_cluster_backtrack_status=["completed"])
    assert isinstance(page, DbClusterBacktrackMessage), page
    assert [b.backtrack_identifier for b in page.db_cluster_backtracks] == [accepted.backtrack_identifier]

    missing = describe_db_cluster.sync("no-such-cluster", client=client)
    assert isinstance(missing, ErrorResponse), missing
    assert missing.error.code == "DBClusterNotFoundFault", missing.error.code
    print(f"generated client: create, describe, backtrack and describe backtracks OK ({name})")


if __name__ == "__main__":
    main(sys.argv[1])
