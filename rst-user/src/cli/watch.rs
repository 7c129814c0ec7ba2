//! `rstmon watch`: live classified samples, one line (or JSON object) each — from a
//! running daemon's stream when there is one, else from rstmon's own programs.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{info, warn};

use super::{args::WatchArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    attribute::{Names, Sources},
    drain,
    present::printer::Printer,
    stream::{client, filter::Filter},
};

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let spec = args.filter.spec();
    // Validated before anything else, in both modes.
    let filter = Filter::new(&spec)?;
    if args.standalone {
        info!("standalone (--standalone): loading rstmon's own programs");
        return standalone(args, filter).await;
    }
    let path = &args.daemon_socket;
    // From the daemon, `-i` narrows its wire samples.
    let mut daemon_spec = spec;
    daemon_spec.interface = args.common.interfaces.clone();
    Filter::new(&daemon_spec)?;
    match client::connect(path, &daemon_spec).await? {
        Some(session) => {
            info!(
                "reading samples from the daemon at {} (rstmon {}); attaching nothing",
                path.display(),
                session.hello.rstmon
            );
            info!("watching resets (Ctrl-C to stop)");
            session.run(args.json, shutdown_signal()).await
        }
        None => {
            info!(
                "no daemon at {}: standalone, loading rstmon's own programs",
                path.display()
            );
            standalone(args, filter).await
        }
    }
}

async fn standalone(args: WatchArgs, filter: Filter) -> anyhow::Result<()> {
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
    let json = args.json;
    let (stop_tx, stop_rx) = watch::channel(false);
    let printer = Arc::new(Printer::spawn(
        json,
        reasons,
        interfaces.clone(),
        Names::start(Sources::system()),
        filter,
    ));
    let offer = printer.clone();
    let drainer = tokio::spawn(drain::run_with_passes(
        events,
        stop_rx.clone(),
        move |d| match d {
            drain::Drained::Record(Ok(ev)) => offer.offer(ev),
            drain::Drained::Record(Err(e)) => warn!("undecodable sample: {e}"),
            drain::Drained::Pass(at) => offer.drained(at),
        },
    ));
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
