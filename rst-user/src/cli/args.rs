//! Command-line types (clap).

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::{
    attach::XdpModeArg,
    export::{
        http, info,
        listen::{self, ListenAddr},
    },
    stream::{self, filter::FilterSpec},
};

/// Default `--web.listen-address`: every IPv4 and IPv6 address, port 9745.
pub const DEFAULT_LISTEN: &str = ":9745";

/// `--max-trace-samples-per-sec`'s default.
pub const DEFAULT_TRACE_SAMPLES_PER_SEC: u32 = 20_000;

#[derive(Parser)]
#[command(
    name = "rstmon",
    version = info::SHORT_VERSION,
    long_version = info::LONG_VERSION,
    about = "TCP reset monitor: counts, classifies and exports every RST"
)]
pub struct Cli {
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) and/or
    /// `TARGET=LEVEL` directives, comma-separated, e.g. `info,rstmon=debug`;
    /// `rstmon::ebpf=debug` also turns on the kernel programs' diagnostics.
    /// `--log.level` is the same flag.
    #[arg(
        long,
        alias = "log.level",
        global = true,
        env = "RSTMON_LOG",
        default_value = "info"
    )]
    pub log: String,
    /// Log line format: `text`, or `json` (one JSON object per line).
    #[arg(
        long = "log.format",
        global = true,
        env = "RSTMON_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `--log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// Compare the kernel's own reset counters (MIB) of this network namespace with
    /// rstmon's counts over N seconds; non-zero exit on an unexplained difference.
    Reconcile(ReconcileArgs),
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
    /// Samples per second of the resets the kernel sent and received (the tracepoint
    /// side), over all CPUs, a limit of its own; 0 turns them off. Counters, per
    /// workload ones included, are exact whatever this is.
    #[arg(long, default_value_t = DEFAULT_TRACE_SAMPLES_PER_SEC)]
    pub max_trace_samples_per_sec: u32,
    /// Interfaces counted in a slot of their own (the fastest path, 64 bytes of kernel
    /// memory per CPU each); interfaces beyond it are counted exactly on a slower path.
    #[arg(long, default_value_t = rst_common::WIRE_SLOTS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub wire_slots: u32,
    /// Do not follow socket state changes (sock:inet_sock_set_state): resets then name
    /// no connect()/listen() process and no connection age (the process of a reset
    /// made in a system call and everything else stay).
    #[arg(long)]
    pub no_connection_tracking: bool,
    /// Do not attach skb:kfree_skb, which runs for every packet the host drops: RSTs a
    /// socket answered with a challenge ACK then count as `ignored`, and
    /// `alive_after_reset` is never raised (accepted, ignored, `ttl` and `seq_spray`
    /// stay). For hosts that drop packets at high rates.
    #[arg(long)]
    pub no_drop_tracing: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to serve the metrics on, repeatable: `:PORT` (every IPv4 and IPv6
    /// address), `ADDR:PORT`, `[V6ADDR]:PORT`, or `HOST:PORT` (every address the name
    /// resolves to at start).
    #[arg(long = "web.listen-address", value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = listen::parse, action = ArgAction::Append)]
    pub listen: Vec<ListenAddr>,
    /// Path under which the metrics are served.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = parse_path)]
    pub telemetry_path: String,
    /// exporter-toolkit web configuration file (YAML): TLS certificate and key,
    /// client certificates, basic-auth users with bcrypt hashes, extra headers.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config: Option<PathBuf>,
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
    /// Unix socket on which local `rstmon watch` clients read the classified samples
    /// (mode 0600, in a directory of the daemon's own, created 0700 when missing; root
    /// and the daemon's user only). An empty value turns the stream off.
    #[arg(long = "watch.socket", value_name = "PATH", default_value = stream::DEFAULT_SOCKET,
          value_parser = socket_path)]
    pub watch_socket: PathBuf,
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
    /// Never read from a daemon: load rstmon's own programs (needs the daemon's
    /// privileges and free XDP hooks).
    #[arg(long, conflicts_with = "daemon_socket")]
    pub standalone: bool,
    /// The daemon's watch socket (`rstmon run --watch.socket`). When a daemon accepts
    /// there, `watch` reads its samples and attaches nothing (`-i` then narrows the
    /// wire samples); otherwise it runs standalone.
    #[arg(long, value_name = "PATH", default_value = stream::DEFAULT_SOCKET)]
    pub daemon_socket: PathBuf,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Which samples `watch` shows; different flags must all match, the values of one flag
/// are alternatives.
#[derive(Args)]
pub struct FilterArgs {
    /// Only this cause (repeatable), of either vocabulary: `no_listener`, `refused`, ….
    /// Wire samples have no cause.
    #[arg(long, value_name = "CAUSE")]
    pub cause: Vec<String>,
    /// Only this side (repeatable): `sent`, `received` or `wire`.
    #[arg(long, value_name = "SIDE")]
    pub side: Vec<String>,
    /// Only resets with this port at either end (repeatable).
    #[arg(long, value_name = "PORT")]
    pub port: Vec<u16>,
    /// Only resets with an address in this network at either end (repeatable): a CIDR
    /// (`10.0.0.0/8`, `fd00::/16`) or one address.
    #[arg(long, value_name = "CIDR")]
    pub addr: Vec<String>,
    /// Only resets in this network namespace (its inode number, as in
    /// `ls -Li /proc/PID/ns/net`; repeatable). Samples that carry no namespace do not match.
    #[arg(long, value_name = "INODE")]
    pub netns: Vec<u64>,
    /// Only resets of this workload (a name or shell-style glob, `pod:default/*`;
    /// repeatable). Samples that carry no workload do not match.
    #[arg(long, value_name = "NAME")]
    pub workload: Vec<String>,
}

impl FilterArgs {
    /// The filter these flags describe.
    pub fn spec(&self) -> FilterSpec {
        FilterSpec {
            cause: self.cause.clone(),
            side: self.side.clone(),
            port: self.port.clone(),
            addr: self.addr.clone(),
            netns: self.netns.clone(),
            workload: self.workload.clone(),
            interface: Vec::new(),
        }
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#']) && !s.chars().any(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a URL path (it must start with `/`, e.g. /metrics)"
        ))
    }
}

/// A socket path; empty is allowed (it turns the stream off), unlike clap's `PathBuf`.
fn socket_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

#[derive(Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub common: Common,
    /// Length of the window, in seconds (Ctrl-C ends it early).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,
}
