//! The command line: [`args`] (clap types) and one module per subcommand.

pub mod args;
pub mod check;
pub mod reconcile;
pub mod run;
pub mod selftest;
pub mod watch;

use std::{
    io::{self, IsTerminal as _},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use tracing::info;

use crate::{
    attach::{Config, XdpModeArg},
    kernel::caps,
};
use args::{Cli, Cmd, Common, LogFormat};
use tracing_subscriber::EnvFilter;

/// Levels a bare directive may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Parses `--log` / `RSTMON_LOG`. Stricter than tracing's own parser, which takes a
/// bare word for a target: a directive without `=` must be a level, so that a typo
/// (`debg`) is an error rather than a filter that logs nothing.
pub fn log_filter(spec: &str) -> Result<EnvFilter, String> {
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains('=')
            && !d.contains('[')
            && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "`{d}` is not a level ({}); a target needs one, e.g. `{d}=debug`",
                LEVELS.join(", ")
            ));
        }
        d.parse::<tracing_subscriber::filter::Directive>()
            .map_err(|e| format!("`{d}`: {e}"))?;
    }
    EnvFilter::builder().parse(spec).map_err(|e| format!("{e}"))
}

/// The `rstmon` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match log_filter(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "rstmon: bad log filter `{}` (--log / RSTMON_LOG): {e}",
                cli.log
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.cmd {
        Cmd::Check => {
            let items = check::run();
            return if check::print(&items) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Cmd::Selftest => match selftest::run() {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Cmd::Reconcile(a) => match runtime().and_then(|rt| rt.block_on(reconcile::run(a))) {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        // Without waiting for blocking tasks still running: a load that a signal
        // interrupted (the verifier's time) is abandoned, not awaited.
        Cmd::Run(a) => runtime().and_then(|rt| {
            let r = rt.block_on(run::run(a));
            rt.shutdown_background();
            r
        }),
        Cmd::Watch(a) => runtime().and_then(|rt| rt.block_on(watch::run(a))),
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

pub(crate) fn require_privileges() -> anyhow::Result<()> {
    let missing = caps::missing_for_daemon(caps::effective());
    if !missing.is_empty() {
        bail!(
            "missing privilege: rstmon needs {} (run it as root, or grant the capabilities)",
            missing.join(", ")
        );
    }
    Ok(())
}

pub(crate) fn config(c: &Common) -> Config {
    Config {
        max_samples_per_sec: c.max_samples_per_sec,
        max_trace_samples_per_sec: c.max_trace_samples_per_sec,
        kernel_log: kernel_log_enabled(),
        wire_slots: c.wire_slots,
        track_connections: !c.no_connection_tracking,
        trace_drops: !c.no_drop_tracing,
        ..Config::default()
    }
}

/// Whether `--log` turns on the kernel programs' diagnostics (`rstmon::ebpf=debug`).
pub(crate) fn kernel_log_enabled() -> bool {
    tracing::enabled!(target: "rstmon::ebpf", tracing::Level::DEBUG)
}

/// The XDP mode of `c`, for the controller.
pub(crate) fn xdp_mode(c: &Common) -> XdpModeArg {
    c.xdp_mode
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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

/// Stops the interface controller and the drain task (which drains once more), then
/// detaches everything.
pub(crate) async fn shut_down(
    stop: tokio::sync::watch::Sender<bool>,
    follower: tokio::task::JoinHandle<crate::attach::Programs>,
    drainer: tokio::task::JoinHandle<io::Result<()>>,
) -> anyhow::Result<()> {
    let _ = stop.send(true);
    let programs = follower.await.context("interface controller")?;
    drainer
        .await
        .context("drain task")?
        .context("ring buffer")?;
    drop(programs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "",
            "warn,rstmon=debug",
            "rstmon::ebpf=debug",
            "OFF",
            "hyper=trace,info",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok:?}: {:?}", log_filter(ok).err());
        }
        for (bad, names) in [
            ("debg", "`debg`"),
            ("info,rstmon=lots", "`rstmon=lots`"),
            ("rstmon", "`rstmon`"),
        ] {
            let e = log_filter(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.contains(names), "{bad:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
