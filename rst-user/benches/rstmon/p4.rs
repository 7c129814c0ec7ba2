//! P4: the rstmon daemon itself in a namespace: idle CPU and wakeups, CPU per drained
//! event under load, memory, and /metrics latency at ~2 000 and ~50 000 series of
//! interfaces it really monitors, with node_exporter's scrape as an anchor.

use std::{
    fs, io,
    net::SocketAddr,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rst_common::TCP_RST;
use rst_testkit::{
    Response, Rstmon,
    generator::{Generator, generate},
    get,
    net::{mac_of, rst_to},
    process::pin_thread,
};
use rst_user::netns::{Ns, Pair};

use crate::{
    CPU_CONSUMER, CPU_PACKETS, Opts,
    ext::{Guard, ip_batch, node_exporter},
    progress,
    report::Row,
    stats::{percentile, si, summarize},
};

/// Names of the interfaces P4 adds to the daemon's namespace (`p4if0`, `p4if1`, …).
const IFACE_PREFIX: &str = "p4if";
/// Their link group, which deletes them all in one batch.
const IFACE_GROUP: u32 = 4242;
/// Where node_exporter listens, inside its own namespace.
const NODE_EXPORTER_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9100);

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

/// Samples in an exposition: its lines that are neither empty nor comments.
fn series_count(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// The daemon's `Max open files` line of /proc/PID/limits (soft, hard).
fn daemon_nofile(pid: libc::pid_t) -> String {
    fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!(
                "soft {}, hard {}",
                f.get(3).unwrap_or(&"?"),
                f.get(4).unwrap_or(&"?")
            )
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Open fds of process `pid`.
fn fd_count(pid: libc::pid_t) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits until the daemon's `rstmon_xdp_attached` lists `want` interfaces; returns how
/// many it lists.
fn wait_attached(
    ns: &Ns,
    listen: SocketAddr,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let body = ns.run(|| scrape(listen))??.body;
        let n = body
            .lines()
            .filter(|l| l.starts_with("rstmon_xdp_attached{"))
            .count();
        if n >= want {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            bail!("only {n} of {want} interfaces attached after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `n` scrapes of rstmon (at `listen` in `ns`) and, when given, as many of node_exporter,
/// alternating which goes first; latencies in ms.
fn interleaved_scrapes(
    ns: &Ns,
    listen: SocketAddr,
    ne: Option<&NodeExporter>,
    n: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let ms = |r: Response| r.elapsed.as_secs_f64() * 1e3;
    let mut ours = Vec::with_capacity(n);
    let mut theirs = Vec::with_capacity(n);
    for i in 0..n {
        let order: &[bool] = if i % 2 == 0 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &rstmon in order {
            if rstmon {
                ours.push(ms(ns.run(|| scrape(listen))??));
            } else if let Some(ne) = ne {
                theirs.push(ms(ne.scrape()?));
            }
        }
    }
    Ok((ours, theirs))
}

/// rstmon's and node_exporter's scrapes, interleaved.
struct Anchor {
    /// rstmon's series and latencies (ms).
    series: usize,
    ours: Vec<f64>,
    ne_series: usize,
    theirs: Vec<f64>,
    version: String,
}

/// One level of the /metrics measurement.
struct Level {
    /// The series count aimed at.
    want: usize,
    ifaces: usize,
    /// Series counted in the exposition.
    series: usize,
    created: f64,
    attach_secs: f64,
    /// Latencies, ms.
    lat: Vec<f64>,
    fds: usize,
    rss: f64,
}

/// Debian's node_exporter, run by hand (no service) in a namespace of its own with its
/// default collectors, listening on that namespace's loopback, pinned to the CPU the
/// daemon runs on; stopped by its PID on drop.
struct NodeExporter {
    ns: Ns,
    guard: Guard,
    bin: std::path::PathBuf,
}

impl NodeExporter {
    fn addr() -> SocketAddr {
        SocketAddr::from(NODE_EXPORTER_LISTEN)
    }

    fn start() -> anyhow::Result<Self> {
        let bin = node_exporter().context(
            "node_exporter not found: `cargo xtask bench` puts Debian's into target/tools",
        )?;
        let ns = Ns::new()?;
        let mut cmd = ns.command(&bin.display().to_string());
        cmd.arg(format!("--web.listen-address={}", Self::addr()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = Guard::spawn(&mut cmd, Some(CPU_CONSUMER), libc::SIGTERM)?;
        let me = Self { ns, guard, bin };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match me.scrape() {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    bail!("node_exporter did not answer on {}: {e}", Self::addr())
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
        // Its first scrapes set up collectors: not measured.
        for _ in 0..3 {
            me.scrape()?;
        }
        Ok(me)
    }

    fn scrape(&self) -> anyhow::Result<Response> {
        Ok(self.ns.run(|| scrape(Self::addr()))??)
    }

    fn series(&self) -> anyhow::Result<usize> {
        Ok(series_count(&self.scrape()?.body))
    }

    /// `node_exporter --version`'s version number.
    fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .ok()
            .map(|o| {
                let t = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                t.split_whitespace()
                    .skip_while(|w| *w != "version")
                    .nth(1)
                    .unwrap_or("?")
                    .to_string()
            })
            .unwrap_or_else(|| "?".into())
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        // Before the namespace goes.
        self.guard.stop();
    }
}

pub fn p4(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let idle_secs = if o.quick { 4.0 } else { 10.0 };
    let load_rounds = if o.quick { 3 } else { 5 };
    let load_secs = 1.0;
    let load_rate = 200_000.0;
    let scrapes = if o.quick { 100 } else { 300 };
    let scrapes_big = if o.quick { 30 } else { 150 };
    progress(
        "P4: the rstmon daemon in a namespace (XDP on its veth, tracepoints host-wide); \
         targets: idle ≤ 0.1 % and ≤ 10 wakeups/s, ≤ 300 ns per drained event, RSS ≤ 25 MiB, \
         /metrics p99 ≤ 1 ms at ~2 000 series and ≤ 10 ms at ~50 000",
    );
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
        .iface(&format!("{IFACE_PREFIX}*"))
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
    // A thread that exits between the readings takes its counts with it: never below 0.
    let wakeups = s1.0.saturating_sub(s0.0) as f64 / el;
    let invol = s1.1.saturating_sub(s0.1) as f64 / el;
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

    // /metrics at ~2 000 and ~50 000 series: interfaces the daemon really monitors. ifb
    // devices (this kernel has no dummy driver) created in the daemon's namespace and
    // matched by its `-i 'p4if*'`, attached as they appear (generic XDP).
    let base_body = pair.b.run(|| scrape(listen))??.body;
    let base = series_count(&base_body);
    let needle = format!("interface=\"{}\"", pair.b_if);
    let per_iface = base_body
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .count()
        .max(1);
    let nofile = daemon_nofile(d.pid());
    let mut made = 0usize;
    let mut levels = Vec::new();
    let mut rss = 0.0;
    let mut hwm = 0.0;
    let mut anchor = None;
    for (i, &(want, n)) in [(2_000usize, scrapes), (50_000, scrapes_big)]
        .iter()
        .enumerate()
    {
        let ifaces = (want.saturating_sub(base) as f64 / per_iface as f64).round() as usize;
        let t = Instant::now();
        ip_batch(
            &pair.b,
            (made..ifaces)
                .map(|k| format!("link add {IFACE_PREFIX}{k} group {IFACE_GROUP} type ifb")),
        )?;
        let created = t.elapsed().as_secs_f64();
        made = ifaces;
        let attached = wait_attached(&pair.b, listen, ifaces + 1, Duration::from_secs(300))?;
        let attach_secs = t.elapsed().as_secs_f64();
        let body = pair.b.run(|| scrape(listen))??.body;
        let series = series_count(&body);
        progress(format!(
            "  {ifaces} interfaces monitored ({attached} attached, {attach_secs:.1} s after \
             the first was created): {n} scrapes of /metrics at {series} series"
        ));
        // rstmon alone (the latency rows), then, at the first level, node_exporter's
        // scrapes interleaved with as many more of rstmon's (the anchor): node_exporter
        // is a Go program that keeps working after it answers, on the daemon's CPU.
        let scrape_set = |ne: Option<&NodeExporter>, n: usize| {
            thread::scope(|s| {
                s.spawn(|| {
                    pin_thread(CPU_PACKETS);
                    interleaved_scrapes(&pair.b, listen, ne, n)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("scrape thread panicked"))?
            })
        };
        let (lat, _) = scrape_set(None, n)?;
        if i == 0 {
            let ne = NodeExporter::start()?;
            let (ours, theirs) = scrape_set(Some(&ne), n)?;
            anchor = Some(Anchor {
                series,
                ours,
                ne_series: ne.series()?,
                theirs,
                version: ne.version(),
            });
        }
        let fds = fd_count(d.pid());
        if i == 0 {
            rss = daemon.status_kib("VmRSS:") as f64 / 1024.0;
            hwm = daemon.status_kib("VmHWM:") as f64 / 1024.0;
        }
        levels.push(Level {
            want,
            ifaces,
            series,
            created,
            attach_secs,
            lat,
            fds,
            rss: daemon.status_kib("VmRSS:") as f64 / 1024.0,
        });
    }
    drop(d);
    // Delete the interfaces while the namespace still exists and wait for it: a
    // namespace's links are otherwise destroyed in the background, on CPU time the next
    // benchmark would be measured on. One `link del group` unregisters them in a batch
    // (one by one it takes minutes: an RCU grace period each).
    let t = Instant::now();
    pair.b
        .ip(&["link", "del", "group", &IFACE_GROUP.to_string()])?;
    let deleted = t.elapsed().as_secs_f64();

    let pe = summarize(&per_event);
    notes.push(format!(
        "P4 idle: {:.4} % of a core by schedstat ({idle_pct_stat:.2} % by /proc/PID/stat ticks), \
         {wakeups:.1} voluntary + {invol:.1} involuntary context switches/s, over {el:.1} s; \
         the tracepoints are host-wide, so resets elsewhere on the host also wake it. \
         Under load ({}/s for {load_secs:.0} s per round): {}.",
        idle_pct,
        si(load_rate),
        load_lines.join(", "),
    ));
    notes.push(format!(
        "P4 /metrics: the daemon (`-i {} -i '{IFACE_PREFIX}*'`) started with {base} series, \
         {per_iface} per monitored interface; ifb interfaces (this kernel has no dummy driver) were added to its namespace \
         (`ip -batch`) and followed by it. {}. Each scrape on a fresh connection, from \
         connect to the last byte. RLIMIT_NOFILE of the daemon: {nofile}. {made} interfaces \
         deleted in {deleted:.1} s after the daemon stopped.",
        pair.b_if,
        levels
            .iter()
            .map(|l| format!(
                "{} interfaces (for ~{} series: {} measured in the exposition) created in \
                 {:.1} s and all attached {:.1} s after the first; {} scrapes: p50 {:.2} ms, \
                 p99 {:.2} ms, max {:.2} ms; daemon fds {}, VmRSS {:.1} MiB",
                l.ifaces,
                l.want,
                l.series,
                l.created,
                l.attach_secs,
                l.lat.len(),
                percentile(&l.lat, 50.0),
                percentile(&l.lat, 99.0),
                percentile(&l.lat, 100.0),
                l.fds,
                l.rss
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let mut rows = vec![
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
    ];
    for (l, target_ms) in levels.iter().zip([1.0, 10.0]) {
        let p50 = percentile(&l.lat, 50.0);
        let p99 = percentile(&l.lat, 99.0);
        rows.push(Row {
            id: "P4",
            measure: format!(
                "/metrics latency at {} series ({} interfaces monitored), p99 of {} scrapes",
                l.series,
                l.ifaces,
                l.lat.len()
            ),
            value: format!(
                "p99 {p99:.2} ms (p50 {p50:.2}, max {:.2})",
                percentile(&l.lat, 100.0)
            ),
            baseline: "—".into(),
            ratio: "—".into(),
            target: format!("p99 ≤ {target_ms:.0} ms"),
            pass: Some(p99 <= target_ms),
        });
    }
    if let Some(a) = anchor {
        let us = |lat: &[f64], series: usize| percentile(lat, 50.0) * 1e3 / series.max(1) as f64;
        let ours = us(&a.ours, a.series);
        let theirs = us(&a.theirs, a.ne_series);
        let big = levels
            .get(1)
            .map(|l| {
                format!(
                    "; alone at {} series: {:.2} µs",
                    l.series,
                    us(&l.lat, l.series)
                )
            })
            .unwrap_or_default();
        rows.push(Row {
            id: "P4",
            measure: "anchor: /metrics p50 latency per series against node_exporter (default collectors, own namespace, same CPU as the daemon), scrapes interleaved".into(),
            value: format!(
                "rstmon {ours:.2} µs per series ({} series, p50 {:.2} ms, p99 {:.2} ms, n={}){big}",
                a.series,
                percentile(&a.ours, 50.0),
                percentile(&a.ours, 99.0),
                a.ours.len()
            ),
            baseline: format!(
                "node_exporter {} {theirs:.2} µs per series ({} series, p50 {:.2} ms, p99 \
                 {:.2} ms, n={})",
                a.version,
                a.ne_series,
                percentile(&a.theirs, 50.0),
                percentile(&a.theirs, 99.0),
                a.theirs.len()
            ),
            ratio: format!("{:.2}× node_exporter's per series", ours / theirs),
            target: "—".into(),
            pass: None,
        });
    }
    Ok(rows)
}
