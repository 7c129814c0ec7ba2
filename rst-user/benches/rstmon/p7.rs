//! P7: what connection tracking (`sock:inet_sock_set_state`, which records the
//! connect()/listen() callers and each connection's start) costs per connection:
//! connect + accept + close over loopback of a namespace, as many as one client thread
//! manages in a window, interleaved: no tracing program / rstmon without tracking
//! (`--no-connection-tracking`) / rstmon with tracking (the default). Every connection
//! passes through about six state changes on each side; only SYN_SENT, SYN_RECV and
//! LISTEN do work in the program.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rst_testkit::process::{pin_thread, thread_cpu_ns};
use rst_user::{
    attach::{Config, Monitor},
    netns::Ns,
};

use crate::{
    CPU_CONSUMER, CPU_PACKETS, Opts, drainer::Drainer, progress, report::Row, stats::summarize,
};

/// Target: tracking adds at most this share to the cost of a connection.
const P7_MAX_ADDED: f64 = 0.05;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    None,
    Untracked,
    Tracked,
}

/// Connections per second and client CPU ns per connection over `dur`.
fn window(ns: &Ns, server: SocketAddr, dur: Duration) -> anyhow::Result<(f64, f64)> {
    let r = ns.run(move || -> std::io::Result<(f64, f64)> {
        pin_thread(CPU_PACKETS);
        let t0 = Instant::now();
        let c0 = thread_cpu_ns();
        let mut n = 0u64;
        while t0.elapsed() < dur {
            let s = TcpStream::connect(server)?;
            drop(s);
            n += 1;
        }
        let cpu = thread_cpu_ns() - c0;
        Ok((
            n as f64 / t0.elapsed().as_secs_f64(),
            cpu as f64 / n.max(1) as f64,
        ))
    })??;
    Ok(r)
}

pub fn p7(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 3 } else { 10 };
    let dur = Duration::from_millis(if o.quick { 500 } else { 1000 });
    progress(format!(
        "P7: connect+close rate and client CPU per connection over loopback, no tracing \
         program / rstmon without / with connection tracking, {rounds} interleaved rounds"
    ));
    let ns = Ns::new().context("namespace")?;
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0"))??;
    let server = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin_thread(CPU_CONSUMER);
            listener.set_nonblocking(false).ok();
            for s in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                drop(s);
            }
        })
    };
    window(&ns, server, Duration::from_millis(300))?; // warm up
    let mut results: Vec<(Variant, f64, f64)> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Variant::None, Variant::Untracked, Variant::Tracked]
        } else {
            [Variant::Tracked, Variant::Untracked, Variant::None]
        };
        for v in order {
            let (rate, cpu) = match v {
                Variant::None => window(&ns, server, dur)?,
                _ => {
                    let cfg = Config {
                        track_connections: v == Variant::Tracked,
                        ..Config::default()
                    };
                    let m = Monitor::start(&cfg)?;
                    let (programs, events, _counters) = m.split();
                    let drainer = Drainer::start(events);
                    let r = window(&ns, server, dur)?;
                    let _ = drainer.stop()?;
                    drop(programs);
                    r
                }
            };
            progress(format!(
                "  {v:?}: {rate:.0} connections/s, {cpu:.0} ns client CPU each"
            ));
            results.push((v, rate, cpu));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(server);
    let _ = ns.run(|| TcpStream::connect(server));
    let _ = acceptor.join();
    let of = |v: Variant, f: fn(&(Variant, f64, f64)) -> f64| -> Vec<f64> {
        results.iter().filter(|r| r.0 == v).map(f).collect()
    };
    let rate = |r: &(Variant, f64, f64)| r.1;
    let cpu = |r: &(Variant, f64, f64)| r.2;
    let (rn, ru, rt) = (
        summarize(&of(Variant::None, rate)),
        summarize(&of(Variant::Untracked, rate)),
        summarize(&of(Variant::Tracked, rate)),
    );
    let (cu, ct) = (
        summarize(&of(Variant::Untracked, cpu)),
        summarize(&of(Variant::Tracked, cpu)),
    );
    // CPU per connection decides: the rate of one thread on a shared 2-CPU host follows
    // whatever else runs; the CPU a connection costs does not.
    let added = ct.median / cu.median - 1.0;
    notes.push(format!(
        "P7: connect()+close() of one client thread pinned to CPU {CPU_PACKETS} against an \
         accepting thread on CPU {CPU_CONSUMER}, loopback of a namespace; no tracing program \
         {:.0}/s. Tracking's cost is the client thread's CPU per connection (connect, the \
         loopback softirq of both ends, close) with it over without it, both with rstmon's \
         other hooks attached; the rates are informational.",
        rn.median
    ));
    Ok(vec![Row {
        id: "P7",
        measure: "CPU per connect+close with connection tracking (inet_sock_set_state: connect()/listen() caller and start time per connection)".into(),
        value: format!("{} ({:.0}/s)", ct.fmt(0, " ns"), rt.median),
        baseline: format!("without tracking {} ({:.0}/s)", cu.fmt(0, " ns"), ru.median),
        ratio: format!("{:+.1} % per connection", added * 100.0),
        target: format!("≤ {:.0} % (else an option: it is one, --no-connection-tracking)", P7_MAX_ADDED * 100.0),
        pass: Some(added <= P7_MAX_ADDED),
    }])
}
