//! The control plane's integration tests: the real app on 127.0.0.1:0, a fresh metadata
//! database per test (SQLite, or PostgreSQL with BACKTRACK_TEST_DATABASE_URL), and wiremock
//! as the storage node.

mod auth;
mod backtracks;
mod clones;
mod clusters;
mod e2e;
mod faults;
mod hardening;
mod helpers;
mod jobs;
mod metering;
mod openapi;
mod ops;
mod pg;
mod query;
mod replicas;
mod store;
