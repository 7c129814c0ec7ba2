//! `rstmon run`: the daemon and exporter.

use std::{
    io,
    net::TcpListener,
    sync::{Arc, Mutex, atomic::Ordering},
};

use anyhow::{Context as _, anyhow};
use tokio::sync::watch;
use tracing::info;

use super::{args::RunArgs, config, require_privileges, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    drain,
    export::server,
    kernel,
    sources::Event,
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let selection = Selection::new(&args.common.interfaces)?;
    let listener = TcpListener::bind(args.listen).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {}: address already in use", args.listen)
        } else {
            anyhow!("cannot listen on {}: {e}", args.listen)
        }
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    let monitor = Monitor::start(&config(&args.common))?;
    let tracefs_mounted = monitor.programs.tracefs.clone();
    let (mut programs, events, counters) = monitor.split();
    let logger = programs.take_logger();
    let counters = Arc::new(Mutex::new(counters));
    let hooks = programs.hooks();
    let layout = programs.layout.clone();
    let controller = Controller::start(
        programs,
        selection,
        xdp_mode(&args.common),
        counters.clone(),
    )
    .await?;
    if tracefs_mounted.mounted_now {
        info!(path = %tracefs_mounted.path.display(), "tracefs was not mounted; mounted it");
    }
    let shared = Arc::new(server::Shared {
        counters,
        layout,
        interfaces: controller.interfaces(),
        hooks,
        kernel_release: kernel::release(),
        wire_received: Default::default(),
        trace_received: Default::default(),
        decode_errors: Default::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_shared = shared.clone();
    let drainer = tokio::spawn(drain::run(events, stop_rx.clone(), move |ev| {
        let s = &drain_shared;
        match ev {
            Ok(Event::Wire(_)) => s.wire_received.fetch_add(1, Ordering::Relaxed),
            Ok(_) => s.trace_received.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.decode_errors.fetch_add(1, Ordering::Relaxed),
        };
    }));
    if let Some(logger) = logger {
        tokio::spawn(drain::forward_kernel_log(logger, stop_rx.clone()));
    }
    let follower = tokio::spawn(controller.run(stop_rx));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    info!(address = %bound, "serving /metrics");
    let served = axum::serve(listener, server::router(shared))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server");
    let _ = stop_tx.send(true);
    let programs = follower.await.context("interface controller")?;
    drainer
        .await
        .context("drain task")?
        .context("ring buffer")?;
    served?;
    drop(programs);
    info!("detached; bye");
    Ok(())
}
