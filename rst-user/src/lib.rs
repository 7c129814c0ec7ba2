//! rstmon's user-space side as a library: the `rstmon` binary, the integration tests
//! and the benchmarks share it.

pub mod batch;
pub mod check;
pub mod classify;
pub mod drain;
pub mod events;
pub mod ifaces;
pub mod kernel;
pub mod loader;
pub mod metrics;
pub mod netns;
pub mod privs;
pub mod selftest;
pub mod server;
pub mod sys;
