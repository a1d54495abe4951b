//! The control plane's vocabulary: validated identifiers and windows, cluster and backtrack
//! statuses with their legal transitions, and the records the store keeps. Everything here is
//! plain data and pure functions; nothing does I/O.

pub mod paging;
mod rules;
pub mod timestamp;

use std::fmt;

use serde::Serialize;
use uuid::Uuid;

pub use self::rules::*;
pub use self::timestamp::Timestamp;
pub use backtrack_storage_node::api::MAX_WINDOW_SECS;

/// A DB cluster identifier: 1-63 ASCII letters, digits and hyphens; a letter first; no `--`;
/// no trailing hyphen. Case-insensitive, so it is stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text.as_bytes()[0].is_ascii_alphabetic()
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !text.ends_with('-')
            && !text.contains("--");
        if valid {
            Ok(ClusterId(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "The parameter DBClusterIdentifier is not a valid identifier: {text:?}. \
                 Identifiers must be 1 to 63 characters, begin with a letter, contain only \
                 ASCII letters, digits, and hyphens, and must not end with a hyphen or contain \
                 two consecutive hyphens."
            ))
        }
    }

    /// For values read back from the store, which only ever holds parsed identifiers.
    pub fn from_trusted(text: String) -> Self {
        ClusterId(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The statuses a cluster goes through, as RDS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterStatus {
    /// Recorded; its volume is being created on a storage node.
    Creating,
    Available,
    /// A new backtrack window is being applied to the volume.
    Modifying,
    Backtracking,
    /// Deleted by the user; the volume is being dropped, then the record goes.
    Deleting,
    /// A restore its storage node refused for good (its source's history moved past the
    /// instant, or the source went); it can only be deleted.
    IncompatibleRestore,
}

impl ClusterStatus {
    pub const ALL: [ClusterStatus; 6] = [
        ClusterStatus::Creating,
        ClusterStatus::Available,
        ClusterStatus::Modifying,
        ClusterStatus::Backtracking,
        ClusterStatus::Deleting,
        ClusterStatus::IncompatibleRestore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Creating => "creating",
            ClusterStatus::Available => "available",
            ClusterStatus::Modifying => "modifying",
            ClusterStatus::Backtracking => "backtracking",
            ClusterStatus::Deleting => "deleting",
            ClusterStatus::IncompatibleRestore => "incompatible-restore",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A backtrack starts only from `available` (and moves the cluster to `backtracking`).
    pub fn accepts_backtrack(self) -> bool {
        self == ClusterStatus::Available
    }

    /// A cluster can be restored from (cloned) while its volume is there and settled:
    /// available, or applying a new window or a backtrack (an instant of the past does not
    /// change with either).
    pub fn accepts_restore(self) -> bool {
        matches!(
            self,
            ClusterStatus::Available | ClusterStatus::Modifying | ClusterStatus::Backtracking
        )
    }

    /// ModifyDBCluster applies only to an `available` cluster.
    pub fn accepts_modify(self) -> bool {
        self == ClusterStatus::Available
    }

    /// DeleteDBCluster is refused only while a backtrack runs or a deletion already does.
    pub fn accepts_delete(self) -> bool {
        matches!(
            self,
            ClusterStatus::Available
                | ClusterStatus::Creating
                | ClusterStatus::Modifying
                | ClusterStatus::IncompatibleRestore
        )
    }

    /// Whether SQL can run on the cluster's database now, and if not, why.
    pub fn accepts_sql(self) -> Result<(), SqlRefusal> {
        match self {
            ClusterStatus::Available | ClusterStatus::Modifying => Ok(()),
            ClusterStatus::Backtracking => Err(SqlRefusal::Backtracking),
            ClusterStatus::Creating => Err(SqlRefusal::Creating),
            ClusterStatus::Deleting => Err(SqlRefusal::Deleting),
            ClusterStatus::IncompatibleRestore => Err(SqlRefusal::NoVolume),
        }
    }

    /// The statuses whose change the storage node has still to make (the volume to create or
    /// to give its new window): the reconciler converges these.
    pub fn awaits_node(self) -> bool {
        matches!(self, ClusterStatus::Creating | ClusterStatus::Modifying)
    }

    /// Whether the cluster has a volume its node can report on (not yet created, or going).
    pub fn has_volume(self) -> bool {
        !matches!(
            self,
            ClusterStatus::Creating | ClusterStatus::Deleting | ClusterStatus::IncompatibleRestore
        )
    }

    /// The statuses shown as `inaccessible` while the cluster's storage node does not answer.
    pub fn shows_node_health(self) -> bool {
        matches!(
            self,
            ClusterStatus::Available | ClusterStatus::Backtracking | ClusterStatus::Modifying
        )
    }
}

/// Why SQL cannot run on a cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlRefusal {
    /// A rewind is being applied: the database is away for a moment.
    Backtracking,
    /// The volume does not exist yet.
    Creating,
    /// The cluster is going.
    Deleting,
    /// The cluster's restore failed: it has no volume.
    NoVolume,
}

/// The statuses of a backtrack, as RDS names them: pending -> applying -> completed | failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BacktrackStatus {
    Pending,
    Applying,
    Completed,
    Failed,
}

impl BacktrackStatus {
    pub const ALL: [BacktrackStatus; 4] = [
        BacktrackStatus::Pending,
        BacktrackStatus::Applying,
        BacktrackStatus::Completed,
        BacktrackStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BacktrackStatus::Pending => "pending",
            BacktrackStatus::Applying => "applying",
            BacktrackStatus::Completed => "completed",
            BacktrackStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, BacktrackStatus::Completed | BacktrackStatus::Failed)
    }
}

/// A cluster as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub id: ClusterId,
    /// `cluster-` and 26 characters, unique forever: it also names the cluster's volume, so a
    /// cluster deleted and created again under the same identifier gets a new, empty volume.
    pub resource_id: String,
    pub engine: String,
    pub engine_version: String,
    pub status: ClusterStatus,
    pub backtrack_window: u64,
    /// When history started: creation with a window, or the modification that set one.
    pub backtrack_enabled_at: Option<Timestamp>,
    /// Once a window was set, the backtrack members stay in the cluster's description.
    pub backtrack_ever_enabled: bool,
    pub deletion_protection: bool,
    pub http_endpoint_enabled: bool,
    pub database_name: Option<String>,
    pub master_username: Option<String>,
    /// The master password's SCRAM-SHA-256 verifier, in PostgreSQL's format; the password
    /// itself is never kept.
    pub master_user_verifier: Option<String>,
    pub tags: Vec<Tag>,
    /// The storage node holding the volume.
    pub node_id: String,
    /// Shared by a cluster and its copy-on-write clones (RDS's `CloneGroupId`).
    pub clone_group_id: Option<String>,
    /// For a cluster made by RestoreDBClusterToPointInTime: what it was made from.
    pub restored_from: Option<RestoredFrom>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The source of a restored cluster, kept so its volume can be made (and made again, after a
/// crash) exactly as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredFrom {
    /// The source's identifier at the time.
    pub cluster: ClusterId,
    /// The source's volume (its resource id).
    pub volume: String,
    /// The instant of the source.
    pub at: Timestamp,
    pub restore_type: RestoreType,
}

/// RestoreDBClusterToPointInTime's `RestoreType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreType {
    /// RDS's default: a volume that shares nothing with its source.
    FullCopy,
    /// A clone that shares its source's pages until either side changes them.
    CopyOnWrite,
}

impl RestoreType {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreType::FullCopy => "full-copy",
            RestoreType::CopyOnWrite => "copy-on-write",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "full-copy" => Ok(RestoreType::FullCopy),
            "copy-on-write" => Ok(RestoreType::CopyOnWrite),
            other => Err(format!(
                "Invalid RestoreType {other:?}: it must be full-copy or copy-on-write."
            )),
        }
    }
}

impl Cluster {
    /// `max(time history started, now - window)`, as far as the metadata knows; `None` when
    /// backtrack is off. The node's figures refine it with the actual window.
    pub fn earliest_backtrack_time(&self, now: Timestamp) -> Option<Timestamp> {
        let enabled = self.backtrack_enabled_at?;
        if self.backtrack_window == 0 {
            return None;
        }
        Some(enabled.max(now.plus_secs(-(self.backtrack_window as i64))))
    }

    /// Sets a new target window. History starts now when backtracking was off, and is
    /// dropped when the window becomes 0; the node applies the change (`modifying`).
    /// The name clients connect to the cluster's database by: `DatabaseName`, else the
    /// cluster identifier.
    pub fn database(&self) -> &str {
        self.database_name.as_deref().unwrap_or(self.id.as_str())
    }

    /// Sets a new master password verifier; the node applies it (`modifying`).
    pub fn set_verifier(&mut self, verifier: String) {
        self.master_user_verifier = Some(verifier);
        self.status = ClusterStatus::Modifying;
    }

    pub fn set_window(&mut self, window: u64, now: Timestamp) {
        if window == self.backtrack_window {
            return;
        }
        if self.backtrack_window == 0 {
            self.backtrack_enabled_at = Some(now);
        }
        if window == 0 {
            self.backtrack_enabled_at = None;
        }
        self.backtrack_window = window;
        self.backtrack_ever_enabled |= window > 0;
        self.status = ClusterStatus::Modifying;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    #[serde(rename = "Key")]
    #[schema(min_length = 1, max_length = 128)]
    pub key: String,
    #[serde(rename = "Value", default)]
    #[schema(max_length = 256)]
    pub value: String,
}

/// A backtrack request and its progress; it is also the job the runner executes.
#[derive(Debug, Clone, PartialEq)]
pub struct Backtrack {
    pub id: Uuid,
    pub cluster_id: ClusterId,
    /// The volume the job acts on (the cluster's resource id when it was requested).
    pub volume_id: String,
    pub node_id: String,
    pub requested_to: Timestamp,
    /// The instant actually used; the request until the node reports what it used.
    pub backtrack_to: Timestamp,
    pub backtracked_from: Timestamp,
    pub created_at: Timestamp,
    pub use_earliest: bool,
    pub force: bool,
    pub status: BacktrackStatus,
    pub attempts: i64,
    pub run_at: Timestamp,
    pub deadline_at: Timestamp,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub failure_reason: Option<String>,
}

/// A new resource id: `cluster-` and 26 upper-case base-32 characters, like RDS's.
pub fn new_resource_id() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = Uuid::new_v4().as_u128();
    let mut out = String::from("cluster-");
    for _ in 0..26 {
        out.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_the_rds_rules_and_are_stored_lower_case() {
        assert_eq!(
            ClusterId::parse("My-Cluster-1").unwrap().as_str(),
            "my-cluster-1"
        );
        assert!(ClusterId::parse("a").is_ok());
        assert!(ClusterId::parse(&"a".repeat(63)).is_ok());
        for bad in [
            "",
            "1abc",
            "-abc",
            "abc-",
            "a--b",
            "a_b",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in BacktrackStatus::ALL {
            assert_eq!(BacktrackStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BacktrackStatus::parse("COMPLETED"), None);
        assert_eq!(
            ClusterStatus::parse("backtracking"),
            Some(ClusterStatus::Backtracking)
        );
    }

    #[test]
    fn each_status_accepts_what_rds_allows_in_it() {
        use ClusterStatus::*;
        let accepting = |rule: fn(ClusterStatus) -> bool| {
            ClusterStatus::ALL
                .into_iter()
                .filter(|s| rule(*s))
                .collect::<Vec<_>>()
        };
        assert_eq!(accepting(ClusterStatus::accepts_backtrack), [Available]);
        assert_eq!(accepting(ClusterStatus::accepts_modify), [Available]);
        assert_eq!(
            accepting(ClusterStatus::accepts_delete),
            [Creating, Available, Modifying, IncompatibleRestore]
        );
        assert_eq!(
            accepting(ClusterStatus::accepts_restore),
            [Available, Modifying, Backtracking]
        );
        assert_eq!(IncompatibleRestore.accepts_sql(), Err(SqlRefusal::NoVolume));
        assert_eq!(
            accepting(|s| s.accepts_sql().is_ok()),
            [Available, Modifying]
        );
        assert_eq!(Backtracking.accepts_sql(), Err(SqlRefusal::Backtracking));
        assert_eq!(accepting(ClusterStatus::awaits_node), [Creating, Modifying]);
        assert_eq!(
            accepting(ClusterStatus::has_volume),
            [Available, Modifying, Backtracking]
        );
    }

    #[test]
    fn a_new_window_starts_or_drops_the_history() {
        let now = Timestamp::from_micros(1_000_000);
        let mut c = Cluster {
            id: ClusterId::parse("c").unwrap(),
            resource_id: new_resource_id(),
            engine: ENGINE.into(),
            engine_version: ENGINE_VERSION.into(),
            status: ClusterStatus::Available,
            backtrack_window: 0,
            backtrack_enabled_at: None,
            backtrack_ever_enabled: false,
            deletion_protection: false,
            http_endpoint_enabled: true,
            database_name: None,
            master_username: None,
            master_user_verifier: None,
            tags: Vec::new(),
            node_id: "node-1".into(),
            clone_group_id: None,
            restored_from: None,
            created_at: now,
            updated_at: now,
        };
        c.set_window(600, now);
        assert_eq!(c.backtrack_enabled_at, Some(now));
        assert_eq!(c.status, ClusterStatus::Modifying);
        c.status = ClusterStatus::Available;
        c.set_window(600, Timestamp::from_micros(2_000_000));
        assert_eq!(c.status, ClusterStatus::Available, "no change, no work");
        c.set_window(0, now);
        assert_eq!(
            (c.backtrack_enabled_at, c.backtrack_ever_enabled),
            (None, true)
        );
    }

    #[test]
    fn resource_ids_look_like_rds_ones_and_differ() {
        let a = new_resource_id();
        assert_eq!(a.len(), "cluster-".len() + 26);
        assert!(a.starts_with("cluster-"));
        assert_ne!(a, new_resource_id());
    }
}
