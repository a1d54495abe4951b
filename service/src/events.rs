//! The events DescribeEvents serves: what happens to clusters and their backtracks, and the
//! backtrack window alerts RDS-EVENT-0131 and RDS-EVENT-0132. They are recorded where the
//! change happens and kept 14 days; recording one never fails the change it reports (a lost
//! event is logged, not turned into an error for the caller).

use uuid::Uuid;

use crate::config::Settings;
use crate::domain::{Backtrack, Cluster, RestoreType, RestoredFrom, Timestamp};
use crate::store::{Event, Store};

/// How long events are kept.
pub const RETENTION_DAYS: i64 = 14;

pub const SOURCE_TYPE: &str = "db-cluster";

/// The message RDS gives RDS-EVENT-0131.
pub const WINDOW_SHORT: &str = "The actual Backtrack window is smaller than the target Backtrack \
    window you specified. Consider reducing the number of hours in your target Backtrack window.";
/// The message RDS gives RDS-EVENT-0132.
pub const WINDOW_BACK: &str =
    "The actual Backtrack window is the same as the target Backtrack window.";

/// The categories of the events recorded here (DescribeEventCategories).
pub const CATEGORIES: [&str; 6] = [
    "backtrack",
    "configuration change",
    "creation",
    "deletion",
    "failure",
    "notification",
];

/// The kinds of event, with their category and code.
pub enum What<'a> {
    Created(&'a Cluster),
    /// On a restored cluster: what it was made from.
    Restored(&'a Cluster, &'a RestoredFrom),
    /// On the source of a clone.
    Cloned {
        clone: &'a str,
        at: Timestamp,
    },
    /// A restore the storage node refused for good.
    RestoreFailed(&'a str),
    Modified(&'a Cluster),
    Deleted(&'a Cluster),
    BacktrackStarted(&'a Backtrack),
    BacktrackCompleted(&'a Backtrack, Timestamp),
    BacktrackFailed(&'a Backtrack, &'a str),
    WindowShort {
        window_secs: i64,
        actual_secs: i64,
    },
    WindowBack,
}

/// Records an event about `cluster_id`.
pub async fn record(store: &Store, settings: &Settings, cluster_id: &str, what: What<'_>) {
    let (category, code, message) = match what {
        What::Created(c) => (
            "creation",
            None,
            format!(
                "DB cluster created (backtrack window {} s).",
                c.backtrack_window
            ),
        ),
        What::Modified(c) => (
            "configuration change",
            None,
            format!(
                "DB cluster modified (backtrack window {} s, deletion protection {}).",
                c.backtrack_window,
                if c.deletion_protection { "on" } else { "off" }
            ),
        ),
        What::Restored(c, from) => (
            "creation",
            None,
            match from.restore_type {
                RestoreType::CopyOnWrite => format!(
                    "DB cluster created as a clone of {} at {} (copy-on-write; backtrack window {} s).",
                    from.cluster, from.at, c.backtrack_window
                ),
                RestoreType::FullCopy => format!(
                    "DB cluster created as a full copy of {} at {} (backtrack window {} s).",
                    from.cluster, from.at, c.backtrack_window
                ),
            },
        ),
        What::Cloned { clone, at } => (
            "notification",
            None,
            format!("DB cluster cloned at {at}: the clone is {clone}."),
        ),
        What::RestoreFailed(reason) => (
            "failure",
            None,
            format!("The restore failed and the cluster has no data: {reason}"),
        ),
        What::Deleted(_) => ("deletion", None, "DB cluster deleted.".to_string()),
        What::BacktrackStarted(b) => (
            "backtrack",
            None,
            format!("Backtrack {} to {} started.", b.id, b.backtrack_to),
        ),
        What::BacktrackCompleted(b, to) => (
            "backtrack",
            None,
            format!("Backtrack {} completed: the cluster is at {to}.", b.id),
        ),
        What::BacktrackFailed(b, reason) => (
            "backtrack",
            None,
            format!("Backtrack {} failed: {reason}", b.id),
        ),
        What::WindowShort {
            window_secs,
            actual_secs,
        } => (
            "backtrack",
            Some("RDS-EVENT-0131"),
            format!("{WINDOW_SHORT} (target {window_secs} s, actual {actual_secs} s)"),
        ),
        What::WindowBack => ("backtrack", Some("RDS-EVENT-0132"), WINDOW_BACK.to_string()),
    };
    let event = Event {
        id: Uuid::new_v4().to_string(),
        date: Timestamp::now(),
        source_type: SOURCE_TYPE.to_string(),
        source_identifier: cluster_id.to_string(),
        source_arn: settings.cluster_arn(cluster_id),
        event_code: code.map(str::to_string),
        categories: vec![category.to_string()],
        message,
    };
    if let Err(e) = store.insert_event(&event).await {
        tracing::error!(cluster = cluster_id, error = %e, message = %event.message, "cannot record an event");
    }
}
