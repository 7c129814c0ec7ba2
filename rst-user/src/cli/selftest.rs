//! `rstmon selftest`: S1–S7 over IPv4 and IPv6 in throwaway namespaces, expected vs
//! observed cause per side.

use std::sync::atomic::Ordering;

use tracing::info;

use super::require_privileges;
use crate::{
    attach::{Config, Monitor},
    attribute::{Names, Sources},
    kernel, netns,
    selftest::{self, Collected},
    sources,
};

/// Runs the selftest; `Ok(false)` on a mismatch.
pub fn run() -> anyhow::Result<bool> {
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
        wakeup_bytes: 1,
        ..Config::default()
    })?;
    let (programs, mut ring, _counters) = monitor.split();
    let collected = Collected::default();
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
                    if let Ok(ev) = sources::decode(&item) {
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
        "{:<3} {:<5} {:<9} {:<18} {:<18} {:<8} workload and process",
        "id", "fam", "side", "expected", "observed", "verdict"
    );
    let names = Names::start(Sources::system());
    let rows = selftest::run_all(&collected, &programs.layout, Some(&names), |r| {
        println!(
            "{:<3} {:<5} {:<9} {:<18} {:<18} {:<8} {}",
            r.id,
            r.family,
            r.side,
            r.expected,
            r.observed,
            if r.ok() { "ok" } else { "MISMATCH" },
            r.who
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
