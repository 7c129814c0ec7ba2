//! `rstmon watch`: live classified samples, one line (or JSON object) each.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{args::WatchArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    attribute::{Names, Sources},
    drain,
    present::{line::boot_offset_ns, printer::Printer},
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
    let printer = Arc::new(Printer::spawn(
        json,
        reasons,
        interfaces.clone(),
        Names::start(Sources::system()),
        boot,
    ));
    let offer = printer.clone();
    let drainer = tokio::spawn(drain::run(events, stop_rx.clone(), move |ev| match ev {
        Ok(ev) => offer.offer(ev),
        Err(e) => warn!("undecodable sample: {e}"),
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
    let done = shut_down(stop_tx, follower, drainer).await;
    if let Ok(p) = Arc::try_unwrap(printer) {
        p.finish();
    }
    done
}
