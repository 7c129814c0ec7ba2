//! `rstmon run`: the daemon and exporter.

use std::{
    io,
    sync::{Arc, Mutex, atomic::Ordering},
};

use anyhow::anyhow;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{args::RunArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    drain,
    export::{http, server},
    kernel,
    sources::Event,
    stream::{Encoder, server as watch_stream},
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let selection = Selection::new(&args.common.interfaces)?;
    http::raise_nofile_limit();
    let listener = http::bind(args.listen).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {}: address already in use", args.listen)
        } else {
            anyhow!("cannot listen on {}: {e}", args.listen)
        }
    })?;
    let bound = listener.local_addr().unwrap_or(args.listen);
    let monitor = Monitor::start(&config(&args.common))?;
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
    // The watch stream is an extra: without its socket the daemon runs on. Set up once
    // the daemon is sure to run.
    let hub = Arc::new(watch_stream::Hub::default());
    let watch_listener = if args.watch_socket.as_os_str().is_empty() {
        None
    } else {
        watch_stream::bind(&args.watch_socket)
            .inspect_err(|e| warn!("no watch stream (--watch.socket): {e}"))
            .ok()
    };
    let shared = Arc::new(server::Shared {
        counters,
        layout,
        interfaces: controller.interfaces(),
        hooks,
        kernel_release: kernel::release(),
        wire_received: Default::default(),
        trace_received: Default::default(),
        decode_errors: Default::default(),
        http: Default::default(),
        watch: hub.stats.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_shared = shared.clone();
    let drain_hub = hub.clone();
    let mut encoder = Encoder::new(shared.layout.reasons.clone(), shared.interfaces.clone());
    let drainer = tokio::spawn(drain::run(events, stop_rx.clone(), move |ev| {
        let s = &drain_shared;
        match &ev {
            Ok(Event::Wire(_)) => s.wire_received.fetch_add(1, Ordering::Relaxed),
            Ok(_) => s.trace_received.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.decode_errors.fetch_add(1, Ordering::Relaxed),
        };
        // Samples are presented only while someone watches.
        if drain_hub.has_clients()
            && let Ok(ev) = &ev
            && let Some(v) = encoder.encode(ev)
        {
            drain_hub.publish(&v);
        }
    }));
    let streamer =
        watch_listener.map(|l| tokio::spawn(watch_stream::serve(l, hub, stop_rx.clone())));
    if let Some(logger) = logger {
        tokio::spawn(drain::forward_kernel_log(logger, stop_rx.clone()));
    }
    let follower = tokio::spawn(controller.run(stop_rx));
    info!(address = %bound, "serving /metrics");
    let limits = http::Limits {
        read_header_timeout: args.read_header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
    };
    server::serve(listener, shared, limits, shutdown_signal()).await;
    shut_down(stop_tx, follower, drainer).await?;
    if let Some(streamer) = streamer {
        // Removes the socket.
        let _ = streamer.await;
    }
    info!("detached; bye");
    Ok(())
}
