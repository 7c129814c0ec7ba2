//! Command-line types (clap).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::attach::XdpModeArg;

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
    /// Wire samples per second over all CPUs (a per-CPU token bucket); 0 turns wire
    /// sampling off. Counters are exact whatever this is.
    #[arg(long, default_value_t = 20_000)]
    pub max_samples_per_sec: u32,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to serve /metrics on, ADDR:PORT or :PORT.
    #[arg(long = "web.listen-address", value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
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
