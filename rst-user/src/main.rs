//! rstmon: counts TCP resets at line rate, names the kernel's reason for each one, and
//! exports it to Prometheus.

use std::{
    io::{self, IsTerminal as _, Write as _},
    net::{SocketAddr, TcpListener},
    process::ExitCode,
    sync::{Arc, Mutex, atomic::Ordering},
};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tracing::{info, warn};

use rst_user::{
    check, drain,
    events::{self, Event, Presenter},
    ifaces::{self, Iface},
    kernel,
    loader::{Config, Monitor, XdpModeArg},
    netns, privs, selftest, server,
};

/// Default `--web.listen-address`: all addresses, port 9745.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9745";

#[derive(Parser)]
#[command(
    name = "rstmon",
    version,
    about = "TCP reset monitor: counts, classifies and exports every RST"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info`, `rstmon=debug`.
    #[arg(long, global = true, env = "RSTMON_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
struct Common {
    /// Interface to monitor with XDP (repeatable). Default: every non-loopback interface that is up.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    /// Wire samples per second over all CPUs (a per-CPU token bucket); 0 turns wire
    /// sampling off. Counters are exact whatever this is.
    #[arg(long, default_value_t = 20_000)]
    max_samples_per_sec: u32,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Address to serve /metrics on, ADDR:PORT or :PORT.
    #[arg(long = "web.listen-address", value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    listen: SocketAddr,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    common: Common,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
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

fn resolve_interfaces(names: &[String]) -> anyhow::Result<Vec<Iface>> {
    if names.is_empty() {
        let set = ifaces::default_set();
        if set.is_empty() {
            warn!("no non-loopback interface is up: counting sent and received resets only");
        }
        return Ok(set);
    }
    let mut out: Vec<Iface> = Vec::new();
    for n in names {
        let iface = ifaces::by_name(n).ok_or_else(|| anyhow!("no such interface: {n}"))?;
        if !out.contains(&iface) {
            out.push(iface);
        }
    }
    Ok(out)
}

fn require_privileges() -> anyhow::Result<()> {
    let missing = privs::missing_for_daemon(privs::effective());
    if !missing.is_empty() {
        bail!(
            "missing privilege: rstmon needs {} (run it as root, or grant the capabilities)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn config(c: &Common, interfaces: Vec<Iface>) -> Config {
    Config {
        interfaces,
        max_samples_per_sec: c.max_samples_per_sec,
        wakeup_bytes: 64 * 1024,
        xdp_mode: c.xdp_mode,
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default action (exit) applies.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT: detaching"),
        _ = term.recv() => info!("SIGTERM: detaching"),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let interfaces = resolve_interfaces(&args.common.interfaces)?;
    let listener = TcpListener::bind(args.listen).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {}: address already in use", args.listen)
        } else {
            anyhow!("cannot listen on {}: {e}", args.listen)
        }
    })?;
    listener.set_nonblocking(true)?;
    let monitor = Monitor::start(&config(&args.common, interfaces))?;
    let (keep, events, counters) = monitor.split();
    let shared = Arc::new(server::Shared {
        counters: Mutex::new(counters),
        layout: keep.layout.clone(),
        attached: keep.attached.clone(),
        hooks: keep.hooks.clone(),
        kernel_release: kernel::release(),
        wire_received: Default::default(),
        trace_received: Default::default(),
        decode_errors: Default::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_shared = shared.clone();
    let drainer = tokio::spawn(drain::run(events, stop_rx, move |ev| {
        let s = &drain_shared;
        match ev {
            Ok(Event::Wire(_)) => s.wire_received.fetch_add(1, Ordering::Relaxed),
            Ok(_) => s.trace_received.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.decode_errors.fetch_add(1, Ordering::Relaxed),
        };
    }));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    info!(address = %args.listen, "serving /metrics");
    axum::serve(listener, server::router(shared))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")?;
    let _ = stop_tx.send(true);
    drainer
        .await
        .context("drain task")?
        .context("ring buffer")?;
    drop(keep);
    info!("detached; bye");
    Ok(())
}

async fn watch_cmd(args: WatchArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let interfaces = resolve_interfaces(&args.common.interfaces)?;
    let monitor = Monitor::start(&config(&args.common, interfaces))?;
    let ifnames = monitor.ifnames();
    let (monitor, events, _counters) = monitor.split();
    let reasons = monitor.layout.reasons.clone();
    let boot = events::boot_offset_ns();
    let json = args.json;
    let (stop_tx, stop_rx) = watch::channel(false);
    let drainer = tokio::spawn(drain::run(events, stop_rx, move |ev| {
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: boot,
        };
        let line = match ev {
            Ok(ev) => {
                let s = p.sample(&ev);
                if json {
                    serde_json::to_string(&s).expect("sample serializes")
                } else {
                    s.line()
                }
            }
            Err(e) => {
                warn!("undecodable sample: {e}");
                return;
            }
        };
        let mut out = io::stdout().lock();
        // A closed pipe (e.g. `| head`) ends output quietly.
        let _ = writeln!(out, "{line}");
    }));
    info!(
        interfaces = monitor.attached.len(),
        "watching resets (Ctrl-C to stop)"
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    drainer
        .await
        .context("drain task")?
        .context("ring buffer")?;
    drop(monitor);
    Ok(())
}

fn selftest_cmd() -> anyhow::Result<bool> {
    require_privileges()?;
    netns::on_interrupt(|| {
        eprintln!("rstmon: interrupted; removing the namespaces made so far");
        netns::cleanup_all_and_exit(130);
    });
    let stale = netns::sweep_stale();
    if stale > 0 {
        info!("removed {stale} namespaces left by an earlier run");
    }
    let monitor = Monitor::start(&Config {
        interfaces: vec![],
        max_samples_per_sec: 0,
        wakeup_bytes: 1,
        xdp_mode: XdpModeArg::Auto,
    })?;
    let (programs, mut ring, _counters) = monitor.split();
    let collected = selftest::Collected::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let collected = collected.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd as _;
            while !stop.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 20) };
                while let Some(item) = ring.next() {
                    if let Ok(ev) = events::decode(&item) {
                        collected
                            .0
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(ev);
                    }
                }
            }
        })
    };
    println!(
        "rstmon selftest on Linux {}: S1–S7 over IPv4 and IPv6 in throwaway namespaces",
        kernel::release()
    );
    println!(
        "{:<3} {:<5} {:<9} {:<18} {:<18} verdict",
        "id", "fam", "side", "expected", "observed"
    );
    let rows = selftest::run_all(&collected, &programs.layout, |r| {
        println!(
            "{:<3} {:<5} {:<9} {:<18} {:<18} {}",
            r.id,
            r.family,
            r.side,
            r.expected,
            r.observed,
            if r.ok() { "ok" } else { "MISMATCH" }
        );
    });
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
    drop(programs);
    let rows = rows?;
    let bad = rows.iter().filter(|r| !r.ok()).count();
    println!(
        "{} rows: {} ok, {bad} mismatched",
        rows.len(),
        rows.len() - bad
    );
    Ok(bad == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .init();
    let result = match cli.cmd {
        Cmd::Check => {
            let items = check::run();
            return if check::print(&items) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Cmd::Selftest => match selftest_cmd() {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Cmd::Run(a) => runtime().and_then(|rt| rt.block_on(run(a))),
        Cmd::Watch(a) => runtime().and_then(|rt| rt.block_on(watch_cmd(a))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rstmon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
