//! `rstmon watch`: live classified samples, one line (or JSON object) each.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    sync::{Arc, Mutex},
};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{args::WatchArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    drain,
    present::{line::boot_offset_ns, sample::Presenter},
    sources::Event,
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let selection = Selection::new(&args.common.interfaces)?;
    let monitor = Monitor::start(&config(&args.common))?;
    let (mut programs, events, counters) = monitor.split();
    let logger = programs.take_logger();
    let reasons = programs.layout.reasons.clone();
    let controller = Controller::start(
        programs,
        selection,
        xdp_mode(&args.common),
        Arc::new(Mutex::new(counters)),
    )
    .await?;
    let interfaces = controller.interfaces();
    let boot = boot_offset_ns();
    let json = args.json;
    let (stop_tx, stop_rx) = watch::channel(false);
    // ifindex → name, refreshed from the controller when a sample names an interface
    // this copy does not know.
    let mut ifnames: BTreeMap<u32, String> = BTreeMap::new();
    let drain_interfaces = interfaces.clone();
    let drainer = tokio::spawn(drain::run(events, stop_rx.clone(), move |ev| {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                warn!("undecodable sample: {e}");
                return;
            }
        };
        if let Event::Wire(w) = &ev
            && !ifnames.contains_key(&w.ifindex)
        {
            ifnames = drain_interfaces
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .ifnames();
        }
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: boot,
        };
        let s = p.sample(&ev);
        let line = if json {
            match serde_json::to_string(&s) {
                Ok(l) => l,
                Err(e) => {
                    warn!("sample not serializable: {e}");
                    return;
                }
            }
        } else {
            s.line()
        };
        let mut out = io::stdout().lock();
        // A closed pipe (e.g. `| head`) ends output quietly.
        let _ = writeln!(out, "{line}");
    }));
    if let Some(logger) = logger {
        tokio::spawn(drain::forward_kernel_log(logger, stop_rx.clone()));
    }
    let follower = tokio::spawn(controller.run(stop_rx));
    info!(
        interfaces = interfaces.read().unwrap_or_else(|p| p.into_inner()).len(),
        "watching resets (Ctrl-C to stop)"
    );
    shutdown_signal().await;
    shut_down(stop_tx, follower, drainer).await
}
