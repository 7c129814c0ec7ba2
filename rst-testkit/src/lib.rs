//! rstmon's test tooling, shared by the integration tests and the benchmarks of
//! rst-user and by the parser tests here. Not published.
//!
//! | module | what |
//! |---|---|
//! | [`frames`] | hand-built Ethernet frames, the corpus and the fuzzer of the parser tests |
//! | [`loader`] | the embedded eBPF object loaded for BPF_PROG_TEST_RUN and direct map access |
//! | [`daemon`] | `rstmon run` in a namespace: [`Rstmon`] (how) and the [`Daemon`] guard |
//! | [`scrape`] | HTTP GET from inside a namespace, and the exposition parser ([`Metrics`]) |
//! | [`process`] | spawning, waiting, collecting output, CPU pinning, `/proc` figures |
//! | [`net`] | MACs, GRO, the TCP MIB, multi-queue veths, RST frames across a pair |
//! | [`generator`] | line-rate traffic into a veth pair (BPF_PROG_TEST_RUN live frames) |
//! | [`prometheus`] | a real Prometheus server in a namespace, scraping a daemon, queried over its API |
//! | [`tools`] | `ip link` (XDP attached?), `promtool`, the other tools `cargo xtask setup` installs |
//! | [`watcher`] | `rstmon watch` as a child process, its output collected |
//!
//! Namespaces and veth pairs themselves are [`rst_user::netns`]'s.

pub mod daemon;
pub mod frames;
pub mod generator;
pub mod loader;
pub mod net;
pub mod process;
pub mod prometheus;
pub mod scrape;
pub mod tools;
pub mod watcher;

pub use daemon::{DEFAULT_LISTEN, Daemon, Rstmon, START_TIMEOUT};
pub use process::{EXIT_TIMEOUT, run_to_exit};
pub use scrape::{IO_TIMEOUT, Metrics, Response, Series, get, http_get};
pub use tools::{promtool, promtool_check_metrics, tool, xdp_attachment};
pub use watcher::Watcher;
