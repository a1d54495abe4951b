//! The Backtrack control plane.
//!
//! - `config`: flags and environment, validated once.
//! - `startup`: `App::build(config)` opens the store, binds, spawns workers, runs, stops.
//! - `ops`: the operations (clusters, backtracks, events, billing, metrics, SQL) with their
//!   rules, whichever front door calls them; typed inputs, typed outputs, one error enum.
//! - `http`: the RDS-style REST API and the Data API (one file per resource: parse, call an
//!   operation, render) and its layers.
//! - `error`: `ApiError`, the one mapping from failures to RDS codes and statuses.
//! - `domain`: identifiers, times, statuses, paging — pure values.
//! - `store`: clusters and backtrack jobs in SQLite or PostgreSQL.
//! - `jobs`: the backtrack runner and the cluster reconciler.
//! - `nodes`: the storage nodes, placement, health, local child nodes, live figures.
//! - `billing`: change-record-hours and their cost, in exact arithmetic.
//! - `events`: the events DescribeEvents serves, and the messages they carry.
//! - `openapi`: the OpenAPI document generated from the handlers.

pub mod billing;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod jobs;
pub mod nodes;
pub mod openapi;
pub mod ops;
pub mod startup;
pub mod store;
