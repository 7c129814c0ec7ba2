//! The TC egress program, in the style of P1 and P2:
//!
//! * E1: BPF_PROG_TEST_RUN ns/packet (SCHED_CLS) of `rstmon_tc` against the no-op TC
//!   program built in the same object (`rstmon_tc_noop`), interleaved rounds, on a
//!   non-RST frame and on RSTs counted only and sampled;
//! * E2: end to end through a veth pair: SYNs to a closed port, every one answered by the
//!   receiver's stack with an RST|ACK that leaves through the monitored interface, so the
//!   receiver's XDP (ingress) and TC (egress) both run on every packet. Three variants
//!   in turn: the no-op XDP and no-op TC programs; rstmon's XDP and TC programs attached
//!   the same way (E2a: both directions against the no-ops); and the daemon's whole
//!   Monitor — tracepoints too, each RST being a sent reset it counts, announces and
//!   samples (E2b, the worst case of a host that only sends resets).

use std::{collections::BTreeMap, sync::Arc, thread, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions};
use rst_common::{PROG_TC, PROG_TC_NOOP, PROG_XDP_NOOP, TCP_ACK, TCP_RST, TCP_SYN};
use rst_testkit::{
    frames::{Frame, Tcp},
    generator::{Generator, generate},
    loader::{TC_ACT_UNSPEC, assign_slot, load_object, load_tc, load_xdp, loopback_ifindex, tc},
    net::{mac_of, make_multiqueue, rst_to, tcp_mib},
    process::pin_thread,
};
use rst_user::{
    attach::{Config, Monitor, XdpModeArg, possible_cpus, tc as tc_attach, xdp},
    export::iftable::{Iface, IfaceTable},
    netns::Pair,
};

use crate::{
    CPU_PACKETS, DEFAULT_SAMPLES_PER_SEC, Opts, WAKEUP_BYTES,
    drainer::{Drainer, take_events},
    p1::{diffs, fmt_diff, fmt_ratio, ratios, test_run_ns_of},
    p2::steady_pps,
    progress,
    report::Row,
    stats::{Summary, si, summarize},
};

/// E1 target: a non-RST frame costs at most the no-op plus this.
const E1_NOOP_PLUS_NS: f64 = 3.0;
/// E2 target: packets/s with both directions attached against the no-op programs.
const E2_VS_NOOP: f64 = 0.95;

pub fn e1(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 31 } else { 101 };
    let repeat: u32 = 200_000;
    progress(format!(
        "E1: BPF_PROG_TEST_RUN (SCHED_CLS), {rounds} interleaved rounds of {repeat} repeats \
         of rstmon_tc and rstmon_tc_noop per frame; target: non-RST ≤ no-op + \
         {E1_NOOP_PLUS_NS:.0} ns"
    ));
    let lo = loopback_ifindex();
    let mut off = load_object(0)?;
    assign_slot(&mut off, lo, 0)?;
    load_tc(&mut off, PROG_TC)?;
    load_tc(&mut off, PROG_TC_NOOP)?;
    let mut on = load_object(u32::MAX)?;
    assign_slot(&mut on, lo, 0)?;
    load_tc(&mut on, PROG_TC)?;
    let drainer = Drainer::start(take_events(&mut on)?);

    let ack = Frame::tcp4(TCP_ACK)
        .with_tcp(|t| {
            t.flags = TCP_ACK;
            t.window = 501;
            t.options = Tcp::timestamp_options(0x1234, 0x5678);
        })
        .build()
        .bytes;
    let rst = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    let cases: [(&str, &str, &Vec<u8>, bool, bool); 3] = [
        (
            "E1a",
            "TC egress test_run ns/packet, IPv4 TCP ACK with timestamps (not RST)",
            &ack,
            false,
            true,
        ),
        (
            "E1b",
            "TC egress test_run ns/packet, IPv4 RST|ACK, sampling off (counted and attributed)",
            &rst,
            false,
            false,
        ),
        (
            "E1c",
            "TC egress test_run ns/packet, IPv4 RST|ACK, every one sampled into the ring buffer (drained)",
            &rst,
            true,
            false,
        ),
    ];
    let mut rows = Vec::new();
    thread::scope(|s| -> anyhow::Result<()> {
        s.spawn(|| -> anyhow::Result<()> {
            pin_thread(CPU_PACKETS);
            for (id, measure, frame, sampled, judged) in cases {
                let real: &SchedClassifier = tc(if sampled { &on } else { &off }, PROG_TC);
                let noop: &SchedClassifier = tc(&off, PROG_TC_NOOP);
                for p in [real, noop] {
                    test_run_ns_of(p, frame, repeat / 10, TC_ACT_UNSPEC)?;
                }
                let (mut r, mut n) = (Vec::new(), Vec::new());
                for i in 0..rounds {
                    let order: [(&SchedClassifier, bool); 2] = if i % 2 == 0 {
                        [(real, true), (noop, false)]
                    } else {
                        [(noop, false), (real, true)]
                    };
                    for (p, is_real) in order {
                        let (t, _) = test_run_ns_of(p, frame, repeat, TC_ACT_UNSPEC)?;
                        if is_real { r.push(t) } else { n.push(t) }
                    }
                }
                let over = diffs(&r, &n);
                let ratio = format!(
                    "{}; {}",
                    fmt_diff(&over, "no-op"),
                    fmt_ratio(&ratios(&r, &n), "no-op")
                );
                progress(format!("  {id}: {ratio}"));
                let (target, pass) = if judged {
                    (
                        format!("≤ no-op + {E1_NOOP_PLUS_NS:.0} ns"),
                        Some(over.median <= E1_NOOP_PLUS_NS),
                    )
                } else {
                    ("—".to_string(), None)
                };
                rows.push(Row {
                    id,
                    measure: measure.to_string(),
                    value: summarize(&r).fmt(1, " ns"),
                    baseline: format!("TC no-op {}", summarize(&n).fmt(1, " ns")),
                    ratio,
                    target,
                    pass,
                });
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow!("E1 thread panicked"))?
    })?;
    let drained = drainer.stop()?;
    notes.push(format!(
        "E1: test runs of SCHED_CLS programs run on the loopback with a socket the kernel \
         makes for the run, so the RST rows take rstmon_tc's whole attribution path (no \
         announcement found, then the socket's type); the sampled row's samples were all \
         drained ({drained} read)."
    ));
    Ok(rows)
}

/// An XDP and a TC program of one object, attached to one interface; detached on drop.
struct Links<'a> {
    obj: &'a mut aya::Ebpf,
    names: (&'static str, &'static str),
    xdp: Option<aya::programs::xdp::XdpLinkId>,
    tc: Option<aya::programs::tc::SchedClassifierLinkId>,
}

impl<'a> Links<'a> {
    /// Attaches XDP program `names.0` (native) and TC program `names.1` (tcx, first) of
    /// `obj` to `pair.b_if`.
    fn attach(
        obj: &'a mut aya::Ebpf,
        names: (&'static str, &'static str),
        pair: &Pair,
        b_idx: u32,
    ) -> anyhow::Result<Self> {
        let mut links = Self {
            obj,
            names,
            xdp: None,
            tc: None,
        };
        let p: &mut Xdp = links
            .obj
            .program_mut(names.0)
            .context("XDP program")?
            .try_into()?;
        links.xdp = Some(
            pair.b
                .run(|| p.attach_to_if_index(b_idx, XdpMode::Driver))??,
        );
        let p: &mut SchedClassifier = links
            .obj
            .program_mut(names.1)
            .context("TC program")?
            .try_into()?;
        links.tc = Some(pair.b.run(|| {
            p.attach_with_options(
                &pair.b_if,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
        })??);
        Ok(links)
    }
}

impl Drop for Links<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.xdp.take()
            && let Some(p) = self.obj.program_mut(self.names.0)
            && let Ok(p) = <&mut Xdp>::try_from(p)
        {
            let _ = p.detach(l);
        }
        if let Some(l) = self.tc.take()
            && let Some(p) = self.obj.program_mut(self.names.1)
            && let Ok(p) = <&mut SchedClassifier>::try_from(p)
        {
            let _ = p.detach(l);
        }
    }
}

const NOOP: &str = "no-op";
const PROGRAMS: &str = "rstmon programs";
const MONITOR: &str = "rstmon Monitor";

pub fn e2(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 5 } else { 9 };
    let warm = Duration::from_millis(300);
    let window = Duration::from_secs(1);
    progress(format!(
        "E2: veth pair, live-frames generator on every CPU sending SYNs to a closed port; \
         the receiver's XDP sees each SYN and its TC egress the RST|ACK its stack answers \
         with; {rounds} rounds × 3 variants; target: rstmon's programs ≥ {E2_VS_NOOP:.2}× \
         no-op XDP + no-op TC"
    ));
    let pair = Pair::new().context("creating the veth pair")?;
    let cpus: Vec<usize> = (0..possible_cpus() as usize).collect();
    make_multiqueue(&pair, cpus.len())?;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_idx = pair.b.ifindex(&pair.b_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_000, TCP_SYN);
    let gen_ = Generator::load().context("loading the XDP_TX generator")?;
    let mut noop_obj = load_object(0)?;
    load_xdp(&mut noop_obj, PROG_XDP_NOOP)?;
    load_tc(&mut noop_obj, PROG_TC_NOOP)?;
    let mut prog_obj = load_object(DEFAULT_SAMPLES_PER_SEC)?;
    assign_slot(&mut prog_obj, b_idx, 0)?;
    load_xdp(&mut prog_obj, rst_common::PROG_XDP)?;
    load_tc(&mut prog_obj, PROG_TC)?;
    let prog_drainer = Drainer::start(take_events(&mut prog_obj)?);

    let out0 = pair.b.run(tcp_mib)??;
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
    let out1 = pair.b.run(tcp_mib)??;
    if out1["OutRsts"] == out0["OutRsts"] {
        bail!("the receiver's stack does not answer the generator's SYNs with RSTs");
    }
    let fps = sent as f64 / el.as_secs_f64();
    let per_thread =
        ((3.0 * fps / cpus.len() as f64) * (warm + window).as_secs_f64()).max(1_000_000.0) as u32;

    let mut pps: BTreeMap<&str, Vec<f64>> = Default::default();
    let mut exact = Vec::new();
    for round in 0..rounds {
        for k in 0..3 {
            let variant = [NOOP, PROGRAMS, MONITOR][(round + k) % 3];
            let mut mon = None;
            let mut links = None;
            if variant == MONITOR {
                let cfg = Config {
                    max_samples_per_sec: DEFAULT_SAMPLES_PER_SEC,
                    wakeup_bytes: WAKEUP_BYTES,
                    ..Config::default()
                };
                let m = pair.b.run(|| Monitor::start(&cfg))??;
                let (mut programs, events, mut counters) = m.split();
                counters.assign_slot(b_idx).context("a wire slot")?;
                let prog = programs.xdp()?;
                pair.b
                    .run(|| xdp::attach(prog, &pair.b_if, b_idx, XdpModeArg::Native))??;
                let prog = programs.tc()?;
                pair.b.run(|| tc_attach::attach(prog, &pair.b_if))??;
                mon = Some((programs, Drainer::start(events), counters));
            } else if variant == PROGRAMS {
                links = Some(Links::attach(
                    &mut prog_obj,
                    (rst_common::PROG_XDP, PROG_TC),
                    &pair,
                    b_idx,
                )?);
            } else {
                links = Some(Links::attach(
                    &mut noop_obj,
                    (PROG_XDP_NOOP, PROG_TC_NOOP),
                    &pair,
                    b_idx,
                )?);
            }
            let before = pair.b.run(tcp_mib)??;
            let (_, rate, _) =
                steady_pps(&pair, &gen_, &frame, a_idx, &cpus, per_thread, warm, window)?;
            thread::sleep(Duration::from_millis(30));
            let after = pair.b.run(tcp_mib)??;
            let rsts = after["OutRsts"] - before["OutRsts"];
            drop(links);
            if let Some((programs, drainer, counters)) = mon {
                let ifaces = Arc::new(IfaceTable::new([Iface {
                    ifindex: b_idx,
                    name: pair.b_if.clone(),
                    mode: "native",
                    tc: Some("tcx"),
                }]));
                let snap = counters.snapshot(&programs.layout, &ifaces);
                // Egress counters are the upper half of a slot.
                let first = rst_common::wire_slot_index(0, rst_common::DIR_EGRESS, 0, 0) as usize;
                let egress: u64 = snap.wire.iter().flat_map(|c| &c[first..]).sum();
                let stack: u64 = snap
                    .egress
                    .origins
                    .iter()
                    .filter(|((o, _, _), _)| *o == rst_common::EGRESS_STACK)
                    .map(|(_, v)| v)
                    .sum();
                let mut others: BTreeMap<&str, u64> = BTreeMap::new();
                for ((o, _, _), v) in &snap.egress.origins {
                    if *o != rst_common::EGRESS_STACK && *v > 0 {
                        let label = rst_user::sources::egress::origin_label(*o).unwrap_or("?");
                        *others.entry(label).or_default() += v;
                    }
                }
                let misses: u64 = snap.hook_misses.iter().map(|(_, n)| n).sum();
                let _ = drainer.stop()?;
                exact.push((
                    egress,
                    stack,
                    rsts,
                    format!("{others:?}, hook misses {misses}"),
                ));
                drop(programs);
            }
            progress(format!(
                "  round {}/{rounds} {variant:>15}: {} SYN/s answered (OutRsts +{rsts})",
                round + 1,
                si(rate)
            ));
            pps.entry(variant).or_default().push(rate);
        }
    }
    let _ = prog_drainer.stop()?;
    let paired = |v: &str| -> Summary {
        let q: Vec<f64> = pps[v].iter().zip(&pps[NOOP]).map(|(a, b)| a / b).collect();
        summarize(&q)
    };
    let (vs_prog, vs_mon) = (paired(PROGRAMS), paired(MONITOR));
    let fmt_pps = |x: &Summary| {
        format!(
            "{} pps ({}–{}, n={})",
            si(x.median),
            si(x.min),
            si(x.max),
            x.n
        )
    };
    let exact_ok = exact.iter().all(|(e, s, r, _)| e == s && e <= r);
    notes.push(format!(
        "E2: generator calibrated at {} SYN/s; in the rstmon rounds every RST seen leaving \
         was attributed to the stack (egress == origin stack, ≤ the stack's OutRsts, the rest \
         dropped before the device when the veth ring was full): {} ({}).",
        si(fps),
        if exact_ok { "yes" } else { "NO" },
        exact
            .iter()
            .map(|(e, s, r, o)| format!("{e} left, {s} stack, OutRsts {r}, others {o}"))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let baseline = format!("no-op XDP + no-op TC {}", fmt_pps(&summarize(&pps[NOOP])));
    let ratio = |vs: &Summary| format!("{:.3}× ({:.3}–{:.3})", vs.median, vs.min, vs.max);
    Ok(vec![
        Row {
            id: "E2a",
            measure: "end-to-end SYN/s to a closed port, each answered by an RST|ACK: veth → XDP → TCP stack → TC egress; rstmon's XDP and TC programs (no tracepoints; 20 000 samples/s, drained)".into(),
            value: fmt_pps(&summarize(&pps[PROGRAMS])),
            baseline: baseline.clone(),
            ratio: ratio(&vs_prog),
            target: format!("≥ {E2_VS_NOOP:.2}× no-op"),
            pass: Some(vs_prog.median >= E2_VS_NOOP),
        },
        Row {
            id: "E2b",
            measure: "same, the daemon's whole Monitor: the tracepoints too, every RST a sent reset counted, announced and sampled (trace samples are not rate-limited)".into(),
            value: fmt_pps(&summarize(&pps[MONITOR])),
            baseline,
            ratio: ratio(&vs_mon),
            target: "—".into(),
            pass: None,
        },
    ])
}
