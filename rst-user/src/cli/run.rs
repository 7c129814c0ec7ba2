//! `rstmon run`: the daemon and exporter.

use std::{
    io,
    sync::{Arc, Mutex, atomic::Ordering},
};

use anyhow::anyhow;
use tokio::sync::watch;
use tracing::info;

use super::{args::RunArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    attribute::{Names, Sources},
    drain,
    export::{http, server},
    kernel,
    sources::Event,
    sources::workload::Labels,
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
        labels: Arc::new(Labels::new(
            Names::start(Sources::system()),
            args.max_workloads as usize,
        )),
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
    info!(address = %bound, "serving /metrics");
    let limits = http::Limits {
        read_header_timeout: args.read_header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
    };
    server::serve(listener, shared, limits, shutdown_signal()).await;
    shut_down(stop_tx, follower, drainer).await?;
    info!("detached; bye");
    Ok(())
}
