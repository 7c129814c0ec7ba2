//! P1: BPF_PROG_TEST_RUN ns/packet of the real XDP program against two baselines built in
//! the same object: the no-op (what running any program costs) and the limit (the least
//! work that counts an RST, headers at fixed offsets; see `rst-ebpf/src/limit.rs`), on
//! non-RST and RST frames, sampling off and on.

use std::thread;

use anyhow::{anyhow, bail};
use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};
use rst_common::{
    PROG_XDP, PROG_XDP_LIMIT, PROG_XDP_LIMIT_SLOT, PROG_XDP_LIMIT_VLAN, PROG_XDP_NOOP, Stat,
    TCP_ACK, TCP_RST, TCP_SYN,
};
use rst_testkit::{
    frames::{Frame, Tcp, TcpOpt, Vlan},
    loader::{
        assign_slot, limit_total, load_object, load_xdp, loopback_ifindex, stat_sum, wire_total,
        xdp,
    },
    process::{pin_thread, thread_cpu_ns},
};

use crate::{
    CPU_PACKETS, Opts,
    drainer::{Drainer, take_events},
    progress,
    report::Row,
    stats::{Summary, summarize},
};

/// What a P1 row is judged against.
#[derive(Clone, Copy)]
enum Target {
    /// ≤ this × the limit baseline (the VLAN-aware one when the case says so).
    Limit(f64),
    /// ≤ the no-op + this many ns.
    NoopPlus(f64),
    /// Informational.
    None,
}

struct P1Case {
    id: &'static str,
    measure: &'static str,
    frame: Vec<u8>,
    sampled: bool,
    /// Whether the frame has a VLAN tag: the fixed-offset limit then bails at the tag,
    /// and the row is judged against the VLAN-aware limit instead.
    vlan: bool,
    /// Also run the diagnostic `rstmon_xdp_limit_slot` (the limit's parse, rstmon's
    /// per-interface counting), which splits the distance to the limit.
    split: bool,
    target: Target,
}

/// The programs of one case, in the order their measurements are kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prog {
    Real,
    Noop,
    Limit,
    LimitVlan,
    LimitSlot,
}

/// ns/packet for one test_run call of an XDP program (which must pass the frame): see
/// [`test_run_ns_of`].
fn test_run_ns(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(f64, u64)> {
    test_run_ns_of(prog, frame, repeat, 2)
}

/// ns/packet for one test_run call: the calling thread's CPU time over the call divided
/// by `repeat` (sub-ns resolution), and the kernel's own (integer-truncated) figure. The
/// program must return `pass`.
pub(crate) fn test_run_ns_of<P>(
    prog: &P,
    frame: &[u8],
    repeat: u32,
    pass: u32,
) -> anyhow::Result<(f64, u64)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let c0 = thread_cpu_ns();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    })?;
    let c1 = thread_cpu_ns();
    if r.return_value != pass {
        bail!(
            "the program returned {} instead of its pass verdict {pass}",
            r.return_value
        );
    }
    Ok((
        (c1 - c0) as f64 / f64::from(repeat),
        r.duration.as_nanos() as u64,
    ))
}

/// Median (min–max) of the per-round ratios a/b.
pub(crate) fn ratios(a: &[f64], b: &[f64]) -> Summary {
    let q: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    summarize(&q)
}

/// Median (min–max) of the per-round differences a − b.
pub(crate) fn diffs(a: &[f64], b: &[f64]) -> Summary {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    summarize(&d)
}

pub(crate) fn fmt_ratio(s: &Summary, what: &str) -> String {
    format!("{:.2}× {what} ({:.2}–{:.2})", s.median, s.min, s.max)
}

fn fmt_ns(s: &Summary) -> String {
    format!("{:+.1} ns ({:+.1}–{:+.1})", s.median, s.min, s.max)
}

pub(crate) fn fmt_diff(s: &Summary, what: &str) -> String {
    format!(
        "{:+.1} ns over {what} ({:+.1}–{:+.1})",
        s.median, s.min, s.max
    )
}

/// A SYN or SYN-ACK as Linux sends one: MSS, SACK permitted, timestamp, window scale.
fn handshake(flags: u8) -> Vec<u8> {
    Frame::tcp4(flags)
        .with_tcp(|t| {
            t.flags = flags;
            t.window = 64_240;
            t.options = vec![
                TcpOpt::Mss(1460),
                TcpOpt::SackPermitted,
                TcpOpt::Timestamp {
                    val: 0x1234,
                    ecr: if flags & TCP_ACK != 0 { 0x5678 } else { 0 },
                },
                TcpOpt::Nop,
                TcpOpt::WindowScale(7),
            ];
        })
        .build()
        .bytes
}

pub fn p1(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    // Short calls, many rounds: this VM's speed drifts by tens of percent from one
    // 10 ms to the next (the kernel's own duration agrees), so programs are compared
    // within rounds of a few ms, and the ratios are medians over many rounds.
    let rounds = if o.quick { 31 } else { 101 };
    let repeat: u32 = 200_000;
    progress(format!(
        "P1: BPF_PROG_TEST_RUN, {rounds} interleaved rounds of {repeat} repeats per program \
         and frame (rstmon, no-op, limit; limit with VLAN on the tagged frame); targets: \
         P1a, P1b ≤ 1.05× limit, P1c ≤ 1.15× limit, P1d ≤ no-op + 40 ns"
    ));
    // Test runs arrive on the loopback: give it a wire slot, as the daemon's interface
    // controller gives every interface it attaches to.
    let lo = loopback_ifindex();
    let mut off = load_object(0)?;
    assign_slot(&mut off, lo, 0)?;
    for p in [
        PROG_XDP,
        PROG_XDP_NOOP,
        PROG_XDP_LIMIT,
        PROG_XDP_LIMIT_VLAN,
        PROG_XDP_LIMIT_SLOT,
    ] {
        load_xdp(&mut off, p)?;
    }
    let mut on = load_object(u32::MAX)?;
    assign_slot(&mut on, lo, 0)?;
    load_xdp(&mut on, PROG_XDP)?;

    let ack = |f: Frame| {
        f.with_tcp(|t| {
            t.flags = TCP_ACK;
            t.window = 501;
            t.options = Tcp::timestamp_options(0x1234, 0x5678);
        })
        .build()
        .bytes
    };
    let rst = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    let cases = [
        P1Case {
            id: "P1a",
            measure: "test_run ns/packet, IPv4 TCP ACK with timestamps (not RST)",
            frame: ack(Frame::tcp4(TCP_ACK)),
            sampled: false,
            vlan: false,
            split: false,
            target: Target::Limit(1.05),
        },
        P1Case {
            id: "P1b",
            measure: "test_run ns/packet, 802.1Q VLAN + IPv6 TCP ACK (not RST); judged against the limit with VLAN (the fixed-offset limit stops at the tag)",
            frame: ack(Frame::tcp6(TCP_ACK).with_vlans(&[Vlan::dot1q(42)])),
            sampled: false,
            vlan: true,
            split: false,
            target: Target::Limit(1.05),
        },
        P1Case {
            id: "P1c",
            measure: "test_run ns/packet, IPv4 RST|ACK, sampling off (counted only); split by the limit with rstmon's per-interface counting (limit+slot)",
            frame: rst.clone(),
            sampled: false,
            vlan: false,
            split: true,
            target: Target::Limit(1.15),
        },
        P1Case {
            id: "P1d",
            measure: "test_run ns/packet, IPv4 RST|ACK, every one sampled into the ring buffer (drained by the daemon's drain loop)",
            frame: rst.clone(),
            sampled: true,
            vlan: false,
            split: false,
            target: Target::NoopPlus(40.0),
        },
        P1Case {
            id: "P1e",
            measure: "test_run ns/packet, IPv4 SYN with Linux's options (not RST; for later work)",
            frame: handshake(TCP_SYN),
            sampled: false,
            vlan: false,
            split: false,
            target: Target::None,
        },
        P1Case {
            id: "P1f",
            measure: "test_run ns/packet, IPv4 SYN-ACK with Linux's options (not RST; for later work)",
            frame: handshake(TCP_SYN | TCP_ACK),
            sampled: false,
            vlan: false,
            split: false,
            target: Target::None,
        },
    ];

    let drainer = Drainer::start(take_events(&mut on)?);
    let sampled0 = stat_sum(&on, Stat::WireSampled);
    let full0 = stat_sum(&on, Stat::WireRingFull);
    let limit0 = limit_total(&off);

    let mut rows = Vec::new();
    let mut kernel_note = Vec::new();
    let mut limit_runs = 0u64;
    thread::scope(|s| -> anyhow::Result<()> {
        s.spawn(|| -> anyhow::Result<()> {
            pin_thread(CPU_PACKETS);
            for c in &cases {
                let mut progs = vec![Prog::Real, Prog::Noop, Prog::Limit];
                if c.vlan {
                    progs.push(Prog::LimitVlan);
                }
                if c.split {
                    progs.push(Prog::LimitSlot);
                }
                let prog_of = |p: Prog| match p {
                    Prog::Real => xdp(if c.sampled { &on } else { &off }, PROG_XDP),
                    Prog::Noop => xdp(&off, PROG_XDP_NOOP),
                    Prog::Limit => xdp(&off, PROG_XDP_LIMIT),
                    Prog::LimitVlan => xdp(&off, PROG_XDP_LIMIT_VLAN),
                    Prog::LimitSlot => xdp(&off, PROG_XDP_LIMIT_SLOT),
                };
                // Warm up every one.
                for &p in &progs {
                    test_run_ns(prog_of(p), &c.frame, repeat / 10)?;
                }
                let k = progs.len();
                let mut ns: Vec<Vec<f64>> = vec![Vec::new(); k];
                let mut kns: Vec<Vec<f64>> = vec![Vec::new(); k];
                for i in 0..rounds {
                    // Rotate the order every round, reversed every other round, so that
                    // each program takes every position.
                    let mut order: Vec<usize> = (0..k).map(|j| (i + j) % k).collect();
                    if i % 2 == 1 {
                        order.reverse();
                    }
                    for j in order {
                        let (t, kt) = test_run_ns(prog_of(progs[j]), &c.frame, repeat)?;
                        ns[j].push(t);
                        kns[j].push(kt as f64);
                    }
                }
                if progs.contains(&Prog::Limit) && c.frame == rst {
                    limit_runs += u64::from(repeat / 10) + u64::from(repeat) * rounds as u64;
                }
                let idx = |p: Prog| progs.iter().position(|&q| q == p).unwrap_or(0);
                let real = &ns[idx(Prog::Real)];
                let noop = &ns[idx(Prog::Noop)];
                let limit = &ns[idx(Prog::Limit)];
                let judge = if c.vlan {
                    &ns[idx(Prog::LimitVlan)]
                } else {
                    limit
                };
                let judge_name = if c.vlan { "limit+VLAN" } else { "limit" };
                let vs_limit = ratios(real, judge);
                let vs_noop = ratios(real, noop);
                let over_limit = diffs(real, judge);
                let over_noop = diffs(real, noop);
                let mut baseline = vec![];
                if c.vlan {
                    baseline.push(format!("limit+VLAN {}", summarize(judge).fmt(1, " ns")));
                }
                baseline.push(format!("limit {}", summarize(limit).fmt(1, " ns")));
                baseline.push(format!("no-op {}", summarize(noop).fmt(1, " ns")));
                let mut ratio = vec![
                    format!(
                        "{} = {}",
                        fmt_ratio(&vs_limit, judge_name),
                        fmt_diff(&over_limit, judge_name)
                    ),
                    fmt_ratio(&vs_noop, "no-op"),
                ];
                if c.vlan {
                    ratio.insert(1, fmt_ratio(&ratios(real, limit), "limit"));
                }
                if c.split {
                    let slot = &ns[idx(Prog::LimitSlot)];
                    baseline.insert(0, format!("limit+slot {}", summarize(slot).fmt(1, " ns")));
                    ratio.push(format!(
                        "split: counting per interface (limit+slot − limit) {}, parsing \
                         (rstmon − limit+slot) {}",
                        fmt_ns(&diffs(slot, limit)),
                        fmt_ns(&diffs(real, slot)),
                    ));
                }
                let (target, pass) = match c.target {
                    Target::Limit(t) => (
                        format!("≤ {t:.2}× {judge_name}"),
                        Some(vs_limit.median <= t),
                    ),
                    Target::NoopPlus(t) => {
                        ratio.insert(0, fmt_diff(&over_noop, "no-op"));
                        (format!("≤ no-op + {t:.0} ns"), Some(over_noop.median <= t))
                    }
                    Target::None => ("—".to_string(), None),
                };
                let rs = summarize(real);
                progress(format!(
                    "  {}: {:.1} ns; {judge_name} {:.1} ns, no-op {:.1} ns → {}",
                    c.id,
                    rs.median,
                    summarize(judge).median,
                    summarize(noop).median,
                    ratio.join("; ")
                ));
                let km = |v: &Vec<f64>| summarize(v).median;
                kernel_note.push(format!(
                    "{} {:.0}/{:.0}/{:.0}",
                    c.id,
                    km(&kns[idx(Prog::Real)]),
                    km(&kns[idx(if c.vlan { Prog::LimitVlan } else { Prog::Limit })]),
                    km(&kns[idx(Prog::Noop)]),
                ));
                rows.push(Row {
                    id: c.id,
                    measure: c.measure.to_string(),
                    value: rs.fmt(1, " ns"),
                    baseline: baseline.join("; "),
                    ratio: ratio.join("; "),
                    target,
                    pass,
                });
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow!("P1 thread panicked"))?
    })?;
    let attempted = wire_total(&on);
    let sampled = stat_sum(&on, Stat::WireSampled) - sampled0;
    let full = stat_sum(&on, Stat::WireRingFull) - full0;
    let drained = drainer.stop()?;
    let limit_counted = limit_total(&off) - limit0;
    notes.push(format!(
        "P1d: of {attempted} RSTs run through the sampled program, {sampled} ({:.1} %) were \
         written to the ring buffer and {full} found it full (counted in \
         `rstmon_samples_dropped_total{{reason=\"ring_full\"}}`); the drain loop read {drained}.",
        100.0 * sampled as f64 / attempted as f64
    ));
    notes.push(format!(
        "P1 limit baselines (`rst-ebpf/src/limit.rs`): `rstmon_xdp_limit` reads the EtherType, \
         the IPv4 version/IHL byte (must be 0x45) and protocol or the IPv6 next header, and \
         the TCP flags byte at fixed offsets, and adds one to a per-CPU array slot (family × \
         ACK) for an RST; `rstmon_xdp_limit_vlan` also takes zero or one VLAN tag. On the RST \
         frames the limit counted {limit_counted} of the {limit_runs} runs it had on them \
         (all RSTs, so all counted: {}). On the VLAN frame the plain limit stops at the tag \
         (EtherType 0x8100), so it is nearly a no-op there.",
        if limit_counted == limit_runs {
            "yes"
        } else {
            "NO"
        }
    ));
    notes.push(format!(
        "P1 cross-check, the kernel's own integer `duration` (rstmon/limit/no-op, ns; the \
         VLAN row's limit is the VLAN one): {}.",
        kernel_note.join(", ")
    ));
    Ok(rows)
}
