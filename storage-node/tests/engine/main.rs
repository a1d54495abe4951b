//! The storage engine's tests, in-process over temporary directories under target/.

mod backtracks;
mod common;
mod differential;
mod retention;
mod workload;
