//! `rstmon run`: the daemon and exporter.

use std::sync::{Arc, Mutex, OnceLock, atomic::Ordering};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use super::{args::RunArgs, config, require_privileges, shut_down, shutdown_signal, xdp_mode};
use crate::{
    attach::{Monitor, Programs, controller::Controller, select::Selection},
    attribute::{Names, Sources},
    drain,
    export::{http, listen, server, webconfig::WebConfig},
    kernel,
    sources::Event,
    sources::workload::Labels,
    stream::{Encoder, server as watch_stream},
};

/// Names a file whose existence holds the start before the programs are loaded: how the
/// tests see the exposition of a daemon that is starting. A testing aid, not a user
/// setting.
pub const HOLD_START_ENV: &str = "RSTMON_TEST_HOLD_START_FILE";

/// Serves `/metrics` from the start and loads the programs meanwhile: verifying them
/// takes the kernel most of a second, and a scrape in that time answers `rstmon_ready
/// 0` (with rstmon's own series) rather than a refused connection; `/-/ready` says when
/// every family is exported.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    require_privileges()?;
    let selection = Selection::new(&args.common.interfaces)?;
    let mut web = match &args.web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    let tls = web.tls.take();
    http::raise_nofile_limit();
    let listeners = listen::bind_all(&args.listen)?;
    let hub = Arc::new(watch_stream::Hub::default());
    let shared = Arc::new(server::Shared {
        monitoring: OnceLock::new(),
        kernel_release: kernel::release(),
        wire_received: Default::default(),
        trace_received: Default::default(),
        verdict_received: Default::default(),
        decode_errors: Default::default(),
        http: Default::default(),
        telemetry_path: args.telemetry_path.clone(),
        web,
        scrapes: Default::default(),
        fail_render_file: std::env::var_os(server::FAIL_RENDER_ENV).map(Into::into),
        watch: hub.stats.clone(),
    });
    // Logged once ready: a start that fails (a user error) prints its one error line.
    let bound: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let with_tls = tls.is_some();
    let limits = http::Limits {
        read_header_timeout: args.read_header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections as usize,
    };
    let mut server = tokio::spawn(server::serve(
        listeners,
        shared.clone(),
        tls,
        limits,
        shutdown_signal(),
    ));

    // The runtime has one thread, which serves: the load (blocking syscalls, the
    // verifier) runs beside it.
    let cfg = config(&args.common);
    let hold = std::env::var_os(HOLD_START_ENV).map(std::path::PathBuf::from);
    let load = move || {
        while hold.as_ref().is_some_and(|f| f.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Monitor::start(&cfg)
    };
    let monitor = tokio::select! {
        m = tokio::task::spawn_blocking(load) => m??,
        // A signal while loading: stop as soon as it is asked (the load is abandoned
        // in its thread, see cli::main, and attaches nothing that outlives the
        // process).
        served = &mut server => {
            served.map_err(|e| anyhow::anyhow!("the HTTP server failed: {e}"))?;
            info!("stopped while starting");
            return Ok(());
        }
    };
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
    let watch_listener = if args.watch_socket.as_os_str().is_empty() {
        None
    } else {
        watch_stream::bind(&args.watch_socket)
            .inspect_err(|e| warn!("no watch stream (--watch.socket): {e}"))
            .ok()
    };
    let names = Names::start(Sources::system());
    let interfaces = controller.interfaces();
    let mut encoder = Encoder::new(
        layout.reasons.clone(),
        interfaces.clone(),
        Some(names.clone()),
    );
    let monitoring = server::Monitoring {
        counters,
        layout,
        interfaces,
        hooks,
        labels: Arc::new(Labels::new(names, args.max_workloads as usize)),
        iftable: Default::default(),
    };
    if shared.monitoring.set(monitoring).is_err() {
        anyhow::bail!("the exporter's state was set twice");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain_shared = shared.clone();
    let drain_hub = hub.clone();
    let drainer = tokio::spawn(drain::run_with_passes(events, stop_rx.clone(), move |d| {
        let s = &drain_shared;
        let ev = match d {
            drain::Drained::Record(ev) => ev,
            drain::Drained::Pass(at) => {
                for v in encoder.drained(at) {
                    drain_hub.publish(&v);
                }
                return;
            }
        };
        match &ev {
            Ok(Event::Wire(_)) => s.wire_received.fetch_add(1, Ordering::Relaxed),
            Ok(Event::Verdict(_)) => s.verdict_received.fetch_add(1, Ordering::Relaxed),
            Ok(_) => s.trace_received.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.decode_errors.fetch_add(1, Ordering::Relaxed),
        };
        // Samples are presented only while someone watches.
        if drain_hub.has_clients()
            && let Ok(ev) = &ev
        {
            for v in encoder.encode(ev) {
                drain_hub.publish(&v);
            }
        }
    }));
    let streamer =
        watch_listener.map(|l| tokio::spawn(watch_stream::serve(l, hub, stop_rx.clone())));
    if let Some(logger) = logger {
        tokio::spawn(drain::forward_kernel_log(logger, stop_rx.clone()));
    }
    let follower = follow(controller, stop_rx)?;
    for address in bound {
        info!(%address, tls = with_tls, "serving {}", args.telemetry_path);
    }
    let served = server.await;
    shut_down(stop_tx, follower, drainer).await?;
    if let Some(streamer) = streamer {
        // Removes the socket.
        let _ = streamer.await;
    }
    served.map_err(|e| anyhow::anyhow!("the HTTP server failed: {e}"))?;
    info!("detached; bye");
    Ok(())
}

/// Runs the interface controller on a thread of its own, with a runtime of its own, so
/// that it never holds the thread that answers `/metrics`: attaching an interface is a
/// few blocking syscalls (a tcx attach waits for an RCU grace period, 10–30 ms here),
/// and a burst of thousands of new interfaces, or a resync that dumps thousands of
/// links, would otherwise keep every scrape waiting until it is over. The netlink
/// connection stays on the main runtime; the two talk over channels.
fn follow(
    controller: Controller,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Programs>> {
    use anyhow::Context as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the interface controller's runtime")?;
    Ok(tokio::task::spawn_blocking(move || {
        rt.block_on(controller.run(stop))
    }))
}
