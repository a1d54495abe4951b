//! The Backtrack storage node: volumes of SQLite over a durable, multi-versioned page log.
//!
//! - `api`: the node's HTTP contract (wire types), shared with the control plane.
//! - `client`: the typed HTTP client the control plane uses.
//! - `config`: the node's flags.
//! - `engine`: the log, the volumes, the SQLite VFS, SQL execution, and maintenance.
//! - `fsutil`: private files and directories, atomic writes, a full disk, and the lock that
//!   gives a data directory one owner.
//! - `http`: the node's HTTP API over the engine.
//! - `metrics`: the node's `/metrics`.
//! - `pg`: the PostgreSQL protocol for the volumes' databases (over the `pgwire` crate).
//! - `scram`: SCRAM-SHA-256 verifiers, made by the control plane from a master password and
//!   checked by `pg`.
//! - `server`: runs a node until it is told to stop.
//! - `testing` (feature `testing`): helpers for tests, such as a small filesystem to fill.

pub mod api;
pub mod client;
pub mod config;
pub mod engine;
pub mod fsutil;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod scram;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
