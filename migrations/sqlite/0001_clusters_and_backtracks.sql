-- Clusters and backtrack jobs. Times are microseconds since the Unix epoch (UTC); booleans
-- are 0/1 integers so both backends read them the same way.
CREATE TABLE clusters (
    id                      TEXT PRIMARY KEY,          -- DBClusterIdentifier, lower-case
    resource_id             TEXT NOT NULL UNIQUE,      -- DbClusterResourceId; names the volume
    engine                  TEXT NOT NULL,
    engine_version          TEXT NOT NULL,
    status                  TEXT NOT NULL,
    backtrack_window        INTEGER NOT NULL,
    backtrack_enabled_at    INTEGER,
    backtrack_ever_enabled  INTEGER NOT NULL,
    deletion_protection     INTEGER NOT NULL,
    http_endpoint_enabled   INTEGER NOT NULL,
    database_name           TEXT,
    master_username         TEXT,
    tags                    TEXT NOT NULL,             -- JSON array of {"Key","Value"}
    node_id                 TEXT NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);

CREATE TABLE backtracks (
    id                TEXT PRIMARY KEY,                -- BacktrackIdentifier (UUID)
    cluster_id        TEXT NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    volume_id         TEXT NOT NULL,
    node_id           TEXT NOT NULL,
    requested_to      INTEGER NOT NULL,
    backtrack_to      INTEGER NOT NULL,
    backtracked_from  INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    use_earliest      INTEGER NOT NULL,
    force             INTEGER NOT NULL,
    status            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    run_at            INTEGER NOT NULL,
    deadline_at       INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    failure_reason    TEXT,
    updated_at        INTEGER NOT NULL
);

-- DescribeDBClusterBacktracks pages newest first.
CREATE INDEX backtracks_by_cluster ON backtracks (cluster_id, created_at DESC, id DESC);
-- The runner looks only at unfinished jobs.
CREATE INDEX backtracks_runnable ON backtracks (run_at) WHERE status IN ('pending', 'applying');
-- One backtrack at a time per cluster, whatever the code above does.
CREATE UNIQUE INDEX backtracks_one_active ON backtracks (cluster_id)
    WHERE status IN ('pending', 'applying');
