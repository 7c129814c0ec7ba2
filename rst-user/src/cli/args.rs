//! Command-line types (clap).

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{attach::XdpModeArg, export::http};

/// Default `--web.listen-address`: all addresses, port 9745.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9745";

#[derive(Parser)]
#[command(
    name = "rstmon",
    version,
    about = "TCP reset monitor: counts, classifies and exports every RST"
)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `rstmon=debug`;
    /// `rstmon::ebpf=debug` also turns on the kernel programs' diagnostics.
    #[arg(long, global = true, env = "RSTMON_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the daemon: attach, count, serve Prometheus metrics.
    Run(RunArgs),
    /// Print sampled resets live, one line each.
    Watch(WatchArgs),
    /// Check that this host can run rstmon; non-zero exit if not.
    Check,
    /// Reproduce S1–S7 over IPv4 and IPv6 in throwaway namespaces and compare the
    /// cause rstmon names on each side with the expected one; non-zero exit on a mismatch.
    Selftest,
}

#[derive(Args)]
pub struct Common {
    /// Interface to monitor with XDP: a name or a shell-style glob (`'veth*'`),
    /// repeatable. Interfaces that appear later are followed too. Default: every
    /// non-loopback interface that is up, now or later.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,
    /// Wire samples per second over all CPUs, whichever CPUs the RSTs arrive on; 0
    /// turns wire sampling off. Counters are exact whatever this is.
    #[arg(long, default_value_t = 20_000)]
    pub max_samples_per_sec: u32,
    /// Interfaces counted in a slot of their own (the fastest path, 64 bytes of kernel
    /// memory per CPU each); interfaces beyond it are counted exactly on a slower path.
    #[arg(long, default_value_t = rst_common::WIRE_SLOTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub wire_slots: u32,
    /// Do not follow socket state changes (sock:inet_sock_set_state): resets then name
    /// no connect()/listen() process and no connection age (the process of a reset
    /// made in a system call and everything else stay).
    #[arg(long)]
    pub no_connection_tracking: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to serve /metrics on, ADDR:PORT or :PORT.
    #[arg(long = "web.listen-address", value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Time a client has to send a request's head (request line and headers), from its
    /// first byte, or from the connect for a connection's first request; then the
    /// connection is closed. `10s`, `500ms`, `2m`.
    #[arg(long = "web.read-header-timeout", value_name = "DURATION", default_value = "10s", value_parser = http::parse_duration)]
    pub read_header_timeout: Duration,
    /// A keep-alive connection with no new request for this long is closed; so is one
    /// whose client does not read its response within this long.
    #[arg(long = "web.idle-timeout", value_name = "DURATION", default_value = "30s", value_parser = http::parse_duration)]
    pub idle_timeout: Duration,
    /// HTTP connections open at once. At the limit a new connection closes the oldest
    /// one that has no request in progress; when every one has, it is answered 503.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Distinct `workload` label values of rstmon_workload_resets_total; later
    /// workloads are counted as workload="other" (rstmon_workload_overflow_total).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_workloads: u32,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 0.0.0.0:9745, [::]:9745 or :9745)"))
}
