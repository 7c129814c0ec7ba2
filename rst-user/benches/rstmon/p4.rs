//! P4: the rstmon daemon itself in a namespace: idle CPU and wakeups, CPU per drained
//! event under load, memory, and /metrics latency at about 2000 series.

use std::{
    io,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::PerCpuValues;
use rst_common::{TCP_RST, WireKey};
use rst_testkit::{
    Response, Rstmon, get,
    loader::wire_counters_of_process,
    net::{mac_of, rst_to},
};
use rst_user::{attach::possible_cpus, netns::Pair, sys::bpf::percpu_sums};

use crate::{
    CPU_CONSUMER, CPU_PACKETS, Opts,
    generator::{Generator, generate},
    progress,
    report::Row,
    stats::{percentile, si, summarize},
};

/// One scrape of /metrics on a fresh connection from the calling thread's namespace;
/// [`Response::elapsed`] is its latency.
fn scrape(addr: SocketAddr) -> io::Result<Response> {
    let r = get(addr, "/metrics")?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "scrape failed: HTTP {}",
            r.status
        )));
    }
    Ok(r)
}

/// `rstmon_samples_received_total{source="wire"}` of a scrape (0 if absent).
fn wire_received(r: &Response) -> u64 {
    r.metrics()
        .get("rstmon_samples_received_total", &[("source", "wire")])
        .unwrap_or(0.0) as u64
}

pub fn p4(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let idle_secs = if o.quick { 4.0 } else { 10.0 };
    let load_rounds = if o.quick { 3 } else { 5 };
    let load_secs = 1.0;
    let load_rate = 200_000.0;
    let scrapes = if o.quick { 100 } else { 300 };
    progress("P4: the rstmon daemon in a namespace (XDP on its veth, tracepoints host-wide)");
    let pair = Pair::new().context("creating the veth pair")?;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let port = 9745;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let samples: u32 = 4_000_000;
    let d = Rstmon::new(env!("CARGO_BIN_EXE_rstmon"))
        .global_args(["--log", "warn"])
        .iface(&pair.b_if)
        .listen(listen)
        .args(["--max-samples-per-sec", &samples.to_string()])
        .inherit_stderr()
        .cpu(CPU_CONSUMER)
        .start_timeout(Duration::from_secs(10))
        .try_start(&pair.b)
        .context("starting rstmon")?;
    let daemon = d.proc();
    thread::sleep(Duration::from_secs(1));

    // Idle.
    progress(format!("  idle for {idle_secs:.0} s"));
    let (c0, k0, s0) = (daemon.cpu_ns(), daemon.stat_ticks(), daemon.switches());
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(idle_secs));
    let el = t0.elapsed().as_secs_f64();
    let (c1, k1, s1) = (daemon.cpu_ns(), daemon.stat_ticks(), daemon.switches());
    let idle_pct = (c1 - c0) as f64 / (el * 1e9) * 100.0;
    let wakeups = (s1.0 - s0.0) as f64 / el;
    let invol = (s1.1 - s0.1) as f64 / el;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let idle_pct_stat = (k1 - k0) as f64 / hz / el * 100.0;
    progress(format!(
        "  idle: {idle_pct:.4} % CPU, {wakeups:.1} wakeups/s"
    ));

    // Under load: CPU per drained event.
    let gen_ = Generator::load()?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_001, TCP_RST);
    let mut per_event = Vec::new();
    let mut load_lines = Vec::new();
    for i in 0..load_rounds {
        let r0 = wire_received(&pair.b.run(|| scrape(listen))??);
        let c0 = daemon.cpu_ns();
        let (sent, _) = generate(
            &pair.a,
            &gen_,
            &frame,
            a_idx,
            load_rate,
            Duration::from_secs_f64(load_secs),
            &[CPU_PACKETS],
        )?;
        // Longer than the drain timer, so everything sent has been drained.
        thread::sleep(Duration::from_millis(400));
        let c1 = daemon.cpu_ns();
        let r1 = wire_received(&pair.b.run(|| scrape(listen))??);
        let drained = r1 - r0;
        let ns = (c1 - c0) as f64 / drained.max(1) as f64;
        per_event.push(ns);
        load_lines.push(format!("{sent} sent/{drained} drained"));
        progress(format!(
            "  load round {}/{load_rounds}: {drained} events drained, {ns:.0} ns CPU each",
            i + 1
        ));
    }

    // /metrics at ~2000 series: 500 interfaces' worth of wire keys.
    let mut wire = wire_counters_of_process(d.pid())?;
    let ones = vec![1u64; possible_cpus() as usize];
    for ifindex in 10_000u32..10_500 {
        for family in [rst_common::FAMILY_IPV4, rst_common::FAMILY_IPV6] {
            for ack in [0u8, 1] {
                let key = WireKey {
                    ifindex,
                    family,
                    ack,
                    _pad: [0; 2],
                };
                wire.insert(key, PerCpuValues::try_from(ones.clone())?, 0)?;
            }
        }
    }
    // What reading the map costs by itself, the way every scrape does first (batched).
    let t = Instant::now();
    let keys = percpu_sums(&wire, aya::util::nr_cpus().unwrap_or(1)).len();
    let map_read_ms = t.elapsed().as_secs_f64() * 1e3;
    let body = pair.b.run(|| scrape(listen))??.body;
    let series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    progress(format!(
        "  {scrapes} scrapes of /metrics at {series} series"
    ));
    let lat: Vec<f64> = pair.b.run(|| -> io::Result<Vec<f64>> {
        (0..scrapes)
            .map(|_| scrape(listen).map(|r| r.elapsed.as_secs_f64() * 1e3))
            .collect()
    })??;
    let p50 = percentile(&lat, 50.0);
    let p99 = percentile(&lat, 99.0);
    let lmax = percentile(&lat, 100.0);
    let rss = daemon.status_kib("VmRSS:") as f64 / 1024.0;
    let hwm = daemon.status_kib("VmHWM:") as f64 / 1024.0;
    drop(d);

    let pe = summarize(&per_event);
    notes.push(format!(
        "P4 idle: {:.4} % of a core by schedstat ({idle_pct_stat:.2} % by /proc/PID/stat ticks), \
         {wakeups:.1} voluntary + {invol:.1} involuntary context switches/s, over {el:.1} s; \
         the tracepoints are host-wide, so resets elsewhere on the host also wake it. \
         Under load ({}/s for {load_secs:.0} s per round): {}. /metrics: {series} series, \
         {} scrapes on fresh connections: p50 {p50:.2} ms, p99 {p99:.2} ms, max {lmax:.2} ms; \
         reading the {keys} per-CPU wire keys alone (BPF_MAP_LOOKUP_BATCH, as the daemon \
         does) took {map_read_ms:.2} ms from the benchmark process.",
        idle_pct,
        si(load_rate),
        load_lines.join(", "),
        lat.len()
    ));
    Ok(vec![
        Row {
            id: "P4",
            measure: format!("daemon idle CPU, {idle_secs:.0} s (sum of per-thread schedstat)"),
            value: format!("{idle_pct:.4} % of a core"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 0.1 %".into(),
            pass: Some(idle_pct <= 0.1),
        },
        Row {
            id: "P4",
            measure: "daemon idle wakeups/s (voluntary context switches, all threads)".into(),
            value: format!("{wakeups:.1}/s"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 10/s".into(),
            pass: Some(wakeups <= 10.0),
        },
        Row {
            id: "P4",
            measure: format!(
                "daemon CPU per drained event, {}/s sampled RSTs through the veth",
                si(load_rate)
            ),
            value: pe.fmt(0, " ns"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 300 ns".into(),
            pass: Some(pe.median <= 300.0),
        },
        Row {
            id: "P4",
            measure: "daemon RSS after load and scrapes (VmRSS; VmHWM = peak, at start-up)".into(),
            value: format!("{rss:.1} MiB (peak {hwm:.1} MiB)"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 25 MiB".into(),
            pass: Some(rss <= 25.0),
        },
        Row {
            id: "P4",
            measure: format!(
                "/metrics latency at {series} series, p99 of {} scrapes",
                lat.len()
            ),
            value: format!("p99 {p99:.2} ms (p50 {p50:.2}, max {lmax:.2})"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "p99 ≤ 5 ms".into(),
            pass: Some(p99 <= 5.0),
        },
    ])
}
