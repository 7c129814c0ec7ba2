//! P2: end-to-end packets/s through a veth pair: the live-frames generator on every CPU
//! against the receiver's XDP hook and TCP stack, with no XDP, the no-op program, the
//! daemon's Monitor and tcpdump in turn.

use std::{
    collections::BTreeMap,
    io::{self, BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{Xdp, XdpMode};
use rst_common::{PROG_XDP, PROG_XDP_NOOP, Stat, TCP_ACK, TCP_RST};
use rst_testkit::{
    generator::{Generator, generate},
    loader::{load_object, load_xdp},
    net::{mac_of, make_multiqueue, rst_to, tcp_mib},
    process::{self, pin_thread},
};
use rst_user::{
    attach::{Config, Monitor, XdpModeArg, possible_cpus, xdp},
    export::iftable::{Iface, IfaceTable},
    netns::{Ns, Pair},
};

use crate::{
    CPU_CONSUMER, DEFAULT_SAMPLES_PER_SEC, Opts, WAKEUP_BYTES,
    drainer::Drainer,
    progress,
    report::Row,
    stats::{Summary, si, summarize},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    NoXdp,
    Noop,
    Rstmon,
    Tcpdump,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::NoXdp,
        Variant::Noop,
        Variant::Rstmon,
        Variant::Tcpdump,
    ];
    fn label(self) -> &'static str {
        match self {
            Variant::NoXdp => "no XDP",
            Variant::Noop => "no-op XDP",
            Variant::Rstmon => "rstmon",
            Variant::Tcpdump => "tcpdump",
        }
    }
}

/// A running `tcpdump -w /dev/null` in a namespace; stopped (SIGINT) on drop.
struct Tcpdump {
    child: Child,
    stderr: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Tcpdump {
    fn start(ns: &Ns, ifname: &str) -> anyhow::Result<Self> {
        let mut child = process::spawn(
            ns.command("taskset")
                .args([
                    "-c",
                    &CPU_CONSUMER.to_string(),
                    "tcpdump",
                    "-i",
                    ifname,
                    "-n",
                    "-w",
                    "/dev/null",
                    "tcp[tcpflags] & tcp-rst != 0",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
            None,
        )
        .context("starting tcpdump (apt-get install tcpdump)")?;
        let err = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut t = Self {
            child,
            stderr: rx,
            lines: vec![],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let ready = l.contains("listening on");
                    t.lines.push(l);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                _ => bail!("tcpdump did not start: {}", t.lines.join(" / ")),
            }
        }
        Ok(t)
    }

    /// Stops it and returns its summary lines (captured / dropped by kernel).
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        process::forget(self.child.id() as i32);
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(l);
        }
        self.lines
            .iter()
            .filter(|l| l.contains("captured") || l.contains("dropped by kernel"))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        process::forget(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Targets: rstmon's packet rate against the no-op XDP program's and tcpdump's.
const P2_VS_NOOP: f64 = 0.98;
const P2_VS_TCPDUMP: f64 = 2.0;

pub fn p2(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 5 } else { 9 };
    let warm = Duration::from_millis(300);
    let window = Duration::from_secs(1);
    progress(format!(
        "P2: veth pair, XDP_TX live-frames generator on every CPU → receiver's XDP → TCP \
         stack; {rounds} rounds × 4 variants, {:.0} s windows; targets: rstmon ≥ \
         {P2_VS_NOOP:.2}× no-op XDP and ≥ {P2_VS_TCPDUMP:.0}× tcpdump",
        window.as_secs_f64()
    ));
    let pair = Pair::new().context("creating the veth pair")?;
    // Every CPU generates and receives: the whole host is saturated, so whatever a
    // monitor costs, in the kernel or in user space, comes out of the packet rate.
    let cpus: Vec<usize> = (0..possible_cpus() as usize).collect();
    make_multiqueue(&pair, cpus.len())?;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_idx = pair.b.ifindex(&pair.b_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_000, TCP_RST | TCP_ACK);
    let gen_ = Generator::load().context("loading the XDP_TX generator")?;
    let raw = std::env::var("P2RAW").is_ok();
    let mut noop_obj = load_object(if raw { 10_000 } else { 0 })?;
    let noop_name = if raw { PROG_XDP } else { PROG_XDP_NOOP };
    load_xdp(&mut noop_obj, noop_name)?;

    // Check that frames arrive where they should, and calibrate the generator.
    let in0 = pair.b.run(tcp_mib)??;
    let (sent, el) = generate(
        &pair.a,
        &gen_,
        &frame,
        a_idx,
        0.0,
        Duration::from_millis(300),
        &cpus,
    )?;
    thread::sleep(Duration::from_millis(50));
    let in1 = pair.b.run(tcp_mib)??;
    if in1["InSegs"] == in0["InSegs"] {
        bail!("the generator's frames do not reach the receiver's TCP stack");
    }
    let fps = sent as f64 / el.as_secs_f64();
    // One live-frames call per CPU per measurement, long enough to cover the warm-up
    // and the window even if the variant is much faster than the calibration.
    // (Three times over: the calibration runs before anything is warm, and rounds run up
    // to twice as fast as it.)
    let per_thread =
        ((3.0 * fps / cpus.len() as f64) * (warm + window).as_secs_f64()).max(1_000_000.0) as u32;

    let mut pps: BTreeMap<&str, Vec<f64>> = Default::default();
    let mut loss_total = 0u64;
    let mut sent_total = 0u64;
    let mut csum_errors = 0u64;
    let mut short_windows = 0u32;
    let mut exact = Vec::new();
    let mut tcpdump_notes = Vec::new();
    for round in 0..rounds {
        for k in 0..4 {
            let v = Variant::ALL[(round + k) % 4];
            // Set up the variant.
            let mut noop_link = None;
            let mut mon = None;
            let mut dump = None;
            match v {
                Variant::NoXdp => {}
                Variant::Noop => {
                    let prog: &mut Xdp = noop_obj
                        .program_mut(noop_name)
                        .context("no-op program")?
                        .try_into()?;
                    let link = pair
                        .b
                        .run(|| prog.attach_to_if_index(b_idx, XdpMode::Driver))??;
                    noop_link = Some(link);
                }
                Variant::Rstmon => {
                    let cfg = Config {
                        max_samples_per_sec: DEFAULT_SAMPLES_PER_SEC,
                        wakeup_bytes: WAKEUP_BYTES,
                        ..Config::default()
                    };
                    let m = pair.b.run(|| Monitor::start(&cfg))??;
                    let (mut programs, events, mut counters) = m.split();
                    // As the daemon's interface controller does: a slot, then the attach.
                    counters.assign_slot(b_idx).context("a wire slot")?;
                    let prog = programs.xdp()?;
                    // Links are detached when `programs` drops.
                    pair.b
                        .run(|| xdp::attach(prog, &pair.b_if, b_idx, XdpModeArg::Native))??;
                    mon = Some((programs, Drainer::start(events), counters));
                }
                Variant::Tcpdump => dump = Some(Tcpdump::start(&pair.b, &pair.b_if)?),
            }
            let before = pair.b.run(tcp_mib)??;
            let (sent, rate, full) =
                steady_pps(&pair, &gen_, &frame, a_idx, &cpus, per_thread, warm, window)?;
            thread::sleep(Duration::from_millis(30));
            let after = pair.b.run(tcp_mib)??;
            let recv = after["InSegs"] - before["InSegs"];
            csum_errors += after["InCsumErrors"] - before["InCsumErrors"];
            sent_total += sent;
            loss_total += sent.saturating_sub(recv);
            if !full {
                short_windows += 1;
            }
            pps.entry(v.label()).or_default().push(rate);
            // Tear down.
            if let Some(link) = noop_link {
                let prog: &mut Xdp = noop_obj
                    .program_mut(noop_name)
                    .context("no-op program")?
                    .try_into()?;
                prog.detach(link)?;
            }
            if let Some((programs, drainer, counters)) = mon {
                let ifaces = Arc::new(IfaceTable::new([Iface {
                    ifindex: b_idx,
                    name: pair.b_if.clone(),
                    mode: "native",
                    tc: None,
                }]));
                let snap = counters.snapshot(&programs.layout, &ifaces);
                let wire: u64 = snap.wire.iter().flatten().sum();
                let delivered = drainer.stop()?;
                exact.push((
                    wire,
                    recv,
                    delivered,
                    snap.kernel.get(Stat::WireSampled),
                    snap.kernel.get(Stat::WireRateLimited),
                    snap.kernel.get(Stat::WireRingFull),
                ));
                drop(programs);
            }
            if let Some(d) = dump {
                tcpdump_notes.push(d.stop());
            }
            progress(format!(
                "  round {}/{rounds} {:>9}: {} pps (sent {sent}, received {recv})",
                round + 1,
                v.label(),
                si(rate)
            ));
        }
    }
    let s = |v: Variant| summarize(&pps[v.label()]);
    let (none, noop, mon, dump) = (
        s(Variant::NoXdp),
        s(Variant::Noop),
        s(Variant::Rstmon),
        s(Variant::Tcpdump),
    );
    let paired = |base: Variant| -> Summary {
        let q: Vec<f64> = pps[Variant::Rstmon.label()]
            .iter()
            .zip(&pps[base.label()])
            .map(|(a, b)| a / b)
            .collect();
        summarize(&q)
    };
    let vs_noop = paired(Variant::Noop);
    let vs_dump = paired(Variant::Tcpdump);
    let vs_none = paired(Variant::NoXdp);
    let fmt_pps = |x: &Summary| {
        format!(
            "{} pps ({}–{}, n={})",
            si(x.median),
            si(x.min),
            si(x.max),
            x.n
        )
    };
    let measure = "end-to-end pps, IPv4 RST+ACK to a closed port: veth → XDP → TCP stack (rstmon = daemon's Monitor, default 20 000 samples/s, drained)";
    let rows = vec![
        Row {
            id: "P2",
            measure: measure.to_string(),
            value: fmt_pps(&mon),
            baseline: format!("no-op XDP {}", fmt_pps(&noop)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_noop.median, vs_noop.min, vs_noop.max
            ),
            target: format!("≥ {P2_VS_NOOP:.2}× no-op"),
            pass: Some(vs_noop.median >= P2_VS_NOOP),
        },
        Row {
            id: "P2",
            measure: "same, against tcpdump -w /dev/null 'tcp[tcpflags] & tcp-rst != 0'".into(),
            value: fmt_pps(&mon),
            baseline: format!("tcpdump {}", fmt_pps(&dump)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_dump.median, vs_dump.min, vs_dump.max
            ),
            target: format!("≥ {P2_VS_TCPDUMP:.0}× tcpdump"),
            pass: Some(vs_dump.median >= P2_VS_TCPDUMP),
        },
        Row {
            id: "P2",
            measure: "same, against no XDP program at all (GRO on, for reference)".into(),
            value: fmt_pps(&mon),
            baseline: format!("no XDP {}", fmt_pps(&none)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_none.median, vs_none.min, vs_none.max
            ),
            target: "—".into(),
            pass: None,
        },
    ];
    let exact_ok = exact
        .iter()
        .all(|&(wire, recv, delivered, sampled, limited, full)| {
            wire == recv && sampled == delivered && sampled + limited + full == wire
        });
    notes.push(format!(
        "P2: generator calibrated at {} frames/s; {sent_total} frames sent in all, {loss_total} \
         not counted by the receiver's TCP (TcpInSegs; dropped at the veth ring when the \
         receiver is slower), {csum_errors} checksum errors, {short_windows} windows in which a \
         generator had already finished. rstmon rounds: wire counter == TcpInSegs \
         and sampled + rate-limited + ring-full == counted in every round: {} ({}).",
        si(fps),
        if exact_ok { "yes" } else { "NO" },
        exact
            .iter()
            .map(|(w, _, d, s, l, f)| format!(
                "{w} counted, {s} sampled/{d} drained, {l} rate-limited, {f} ring-full"
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    if !tcpdump_notes.is_empty() {
        notes.push(format!(
            "P2 tcpdump's own report per round: {}.",
            tcpdump_notes.join("; ")
        ));
    }
    Ok(rows)
}

/// Runs one live-frames call of `per_thread` frames on each CPU and reads the receiver's
/// TcpInSegs over `window` after `warm`, while every generator is still sending: call
/// set-up and tear-down stay outside the window. Returns (frames sent, pps in the window,
/// whether every generator was still running at the end of the window).
#[expect(
    clippy::too_many_arguments,
    reason = "the measurement window is described by all of them"
)]
pub(crate) fn steady_pps(
    pair: &Pair,
    gen_: &Generator,
    frame: &[u8],
    ifindex: u32,
    cpus: &[usize],
    per_thread: u32,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<(u64, f64, bool)> {
    thread::scope(|s| -> anyhow::Result<(u64, f64, bool)> {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> io::Result<Instant> {
                    pair.a.run(|| -> io::Result<()> {
                        pin_thread(cpu);
                        gen_.send(frame, ifindex, per_thread)
                    })??;
                    Ok(Instant::now())
                })
            })
            .collect();
        thread::sleep(warm);
        let r0 = pair.b.run(tcp_mib)??["InSegs"];
        let t0 = Instant::now();
        thread::sleep(window);
        let r1 = pair.b.run(tcp_mib)??["InSegs"];
        let t1 = Instant::now();
        let mut full = true;
        for h in handles {
            let end = h.join().map_err(|_| anyhow!("generator panicked"))??;
            full &= end >= t1;
        }
        let pps = (r1 - r0) as f64 / (t1 - t0).as_secs_f64();
        Ok((u64::from(per_thread) * cpus.len() as u64, pps, full))
    })
}
