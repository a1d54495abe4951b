-- Metering: the last sample per volume, hourly usage, recent samples (for metrics and
-- projections), and events. Usage outlives its cluster: it is billing history.
CREATE TABLE meter_state (
    resource_id       TEXT PRIMARY KEY,                -- the cluster's volume
    cluster_id        TEXT NOT NULL,
    first_sampled_at  INTEGER NOT NULL,
    sampled_at        INTEGER NOT NULL,
    stored            INTEGER NOT NULL,
    created           INTEGER NOT NULL,
    window_alert      INTEGER NOT NULL                 -- 1 while the actual window < target
);

CREATE TABLE usage_hours (
    resource_id  TEXT NOT NULL,
    cluster_id   TEXT NOT NULL,
    hour_start   INTEGER NOT NULL,
    units        INTEGER NOT NULL,                     -- twice the record-microseconds
    PRIMARY KEY (resource_id, hour_start)
);
CREATE INDEX usage_hours_by_hour ON usage_hours (hour_start);

CREATE TABLE meter_samples (
    resource_id     TEXT NOT NULL,
    cluster_id      TEXT NOT NULL,
    sampled_at      INTEGER NOT NULL,
    stored          INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    window_secs     INTEGER NOT NULL,
    actual_secs     INTEGER NOT NULL,
    PRIMARY KEY (resource_id, sampled_at)
);

CREATE TABLE events (
    id                 TEXT PRIMARY KEY,
    date               INTEGER NOT NULL,
    source_type        TEXT NOT NULL,
    source_identifier  TEXT NOT NULL,
    source_arn         TEXT NOT NULL,
    event_code         TEXT,                           -- e.g. RDS-EVENT-0131
    categories         TEXT NOT NULL,                  -- JSON array
    message            TEXT NOT NULL
);
CREATE INDEX events_by_date ON events (date, id);
