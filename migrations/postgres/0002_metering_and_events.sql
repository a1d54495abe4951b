-- Metering: the last sample per volume, hourly usage, recent samples (for metrics and
-- projections), and events. Usage outlives its cluster: it is billing history.
CREATE TABLE meter_state (
    resource_id       TEXT PRIMARY KEY,                -- the cluster's volume
    cluster_id        TEXT NOT NULL,
    first_sampled_at  BIGINT NOT NULL,
    sampled_at        BIGINT NOT NULL,
    stored            BIGINT NOT NULL,
    created           BIGINT NOT NULL,
    window_alert      BIGINT NOT NULL                 -- 1 while the actual window < target
);

CREATE TABLE usage_hours (
    resource_id  TEXT NOT NULL,
    cluster_id   TEXT NOT NULL,
    hour_start   BIGINT NOT NULL,
    units        BIGINT NOT NULL,                     -- twice the record-microseconds
    PRIMARY KEY (resource_id, hour_start)
);
CREATE INDEX usage_hours_by_hour ON usage_hours (hour_start);

CREATE TABLE meter_samples (
    resource_id     TEXT NOT NULL,
    cluster_id      TEXT NOT NULL,
    sampled_at      BIGINT NOT NULL,
    stored          BIGINT NOT NULL,
    created         BIGINT NOT NULL,
    window_secs     BIGINT NOT NULL,
    actual_secs     BIGINT NOT NULL,
    PRIMARY KEY (resource_id, sampled_at)
);

CREATE TABLE events (
    id                 TEXT PRIMARY KEY,
    date               BIGINT NOT NULL,
    source_type        TEXT NOT NULL,
    source_identifier  TEXT NOT NULL,
    source_arn         TEXT NOT NULL,
    event_code         TEXT,                           -- e.g. RDS-EVENT-0131
    categories         TEXT NOT NULL,                  -- JSON array
    message            TEXT NOT NULL
);
CREATE INDEX events_by_date ON events (date, id);
