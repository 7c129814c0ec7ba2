//! rstmon's user-space side as a library: the `rstmon` binary, the integration tests
//! and the benchmarks share it.
//!
//! | module | concern |
//! |---|---|
//! | [`cli`] | command-line types and one module per subcommand |
//! | [`kernel`] | introspection of the running kernel: BTF, capabilities |
//! | [`attach`] | loading, attaching, and the interface controller |
//! | [`sources`] | wire, sent and received resets: keys, decoding, classification, metric families |
//! | [`classify`] | the cause tables, as pure functions |
//! | [`export`] | snapshot, exposition, HTTP server |
//! | [`present`] | `watch` lines and JSON |
//! | [`drain`] | reading the ring buffer |
//! | [`stream`] | the daemon's sample stream for `watch`: socket, protocol, filters |
//! | [`selftest`], [`netns`] | S1–S7 in throwaway network namespaces |
//! | [`sys`] | raw system calls aya does not wrap |

pub mod attach;
pub mod attribute;
pub mod classify;
pub mod cli;
pub mod drain;
pub mod export;
pub mod kernel;
pub mod netns;
pub mod present;
pub mod selftest;
pub mod sources;
pub mod stream;
pub mod sys;
