//! The storage engine's tests, in-process over temporary directories under target/.

mod backtracks;
mod clones;
mod common;
mod differential;
mod disk_full;
mod hardening;
mod preview;
mod retention;
mod views;
mod workload;
