//! The Backtrack storage node.
//!
//! - `api`: the node's HTTP contract (wire types), shared with the control plane.
//! - `client`: the typed HTTP client the control plane uses.

pub mod api;
pub mod client;
