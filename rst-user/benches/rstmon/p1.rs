//! P1: BPF_PROG_TEST_RUN ns/packet of the real XDP program against the no-op one, on
//! non-RST and RST frames, sampling off and on.

use std::thread;

use anyhow::{anyhow, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use rst_common::{PROG_XDP, PROG_XDP_NOOP, Stat, TCP_ACK, TCP_RST};
use rst_testkit::{
    frames::{Frame, Tcp, Vlan},
    loader::{load_object, load_xdp, stat_sum, wire_total, xdp},
    process::{pin_thread, thread_cpu_ns},
};

use crate::{
    CPU_PACKETS, Opts,
    drainer::{Drainer, take_events},
    progress,
    report::Row,
    stats::summarize,
};

struct P1Case {
    id: &'static str,
    measure: &'static str,
    frame: Vec<u8>,
    sampled: bool,
    /// true: target is a ratio; false: an absolute difference in ns.
    ratio_target: Option<f64>,
    diff_target: Option<f64>,
}

/// ns/packet for one test_run call: the calling thread's CPU time over the call divided
/// by `repeat` (sub-ns resolution), and the kernel's own (integer-truncated) figure.
fn test_run_ns(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(f64, u64)> {
    let c0 = thread_cpu_ns();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    })?;
    let c1 = thread_cpu_ns();
    if r.return_value != 2 {
        bail!(
            "XDP program returned {} instead of XDP_PASS",
            r.return_value
        );
    }
    Ok((
        (c1 - c0) as f64 / f64::from(repeat),
        r.duration.as_nanos() as u64,
    ))
}

pub fn p1(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 5 } else { 15 };
    let repeat: u32 = 1_000_000;
    progress(format!(
        "P1: BPF_PROG_TEST_RUN, {rounds} interleaved rounds of {repeat} repeats per program and frame"
    ));
    let mut off = load_object(0)?;
    load_xdp(&mut off, PROG_XDP)?;
    load_xdp(&mut off, PROG_XDP_NOOP)?;
    let mut on = load_object(u32::MAX)?;
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
            measure: "test_run ns/packet, IPv4 TCP ACK (not RST)",
            frame: ack(Frame::tcp4(TCP_ACK)),
            sampled: false,
            ratio_target: Some(1.10),
            diff_target: None,
        },
        P1Case {
            id: "P1b",
            measure: "test_run ns/packet, 802.1Q VLAN + IPv6 TCP ACK (not RST)",
            frame: ack(Frame::tcp6(TCP_ACK).with_vlans(&[Vlan::dot1q(42)])),
            sampled: false,
            ratio_target: Some(1.10),
            diff_target: None,
        },
        P1Case {
            id: "P1c",
            measure: "test_run ns/packet, IPv4 RST, sampling off (counted only)",
            frame: rst.clone(),
            sampled: false,
            ratio_target: Some(1.25),
            diff_target: None,
        },
        P1Case {
            id: "P1d",
            measure: "test_run ns/packet, IPv4 RST, every one sampled into the ring buffer (drained by the daemon's drain loop)",
            frame: rst.clone(),
            sampled: true,
            ratio_target: None,
            diff_target: Some(40.0),
        },
    ];

    let drainer = Drainer::start(take_events(&mut on)?);
    let sampled0 = stat_sum(&on, Stat::WireSampled);
    let full0 = stat_sum(&on, Stat::WireRingFull);

    let mut rows = Vec::new();
    let mut kernel_note = Vec::new();
    thread::scope(|s| -> anyhow::Result<()> {
        s.spawn(|| -> anyhow::Result<()> {
            pin_thread(CPU_PACKETS);
            for c in &cases {
                let real = xdp(if c.sampled { &on } else { &off }, PROG_XDP);
                let noop = xdp(&off, PROG_XDP_NOOP);
                // Warm up both.
                test_run_ns(real, &c.frame, repeat / 10)?;
                test_run_ns(noop, &c.frame, repeat / 10)?;
                let (mut r, mut n, mut rk, mut nk) = (vec![], vec![], vec![], vec![]);
                for i in 0..rounds {
                    let order: [bool; 2] = if i % 2 == 0 {
                        [true, false]
                    } else {
                        [false, true]
                    };
                    for is_real in order {
                        let (ns, k) =
                            test_run_ns(if is_real { real } else { noop }, &c.frame, repeat)?;
                        if is_real {
                            r.push(ns);
                            rk.push(k as f64);
                        } else {
                            n.push(ns);
                            nk.push(k as f64);
                        }
                    }
                }
                let rs = summarize(&r);
                let ns = summarize(&n);
                let (ratio, target, pass) = if let Some(t) = c.ratio_target {
                    let q: Vec<f64> = r.iter().zip(&n).map(|(a, b)| a / b).collect();
                    let qs = summarize(&q);
                    (
                        format!("{:.2}× ({:.2}–{:.2})", qs.median, qs.min, qs.max),
                        format!("≤ {t:.2}×"),
                        qs.median <= t,
                    )
                } else {
                    let t = c.diff_target.unwrap_or(0.0);
                    let d: Vec<f64> = r.iter().zip(&n).map(|(a, b)| a - b).collect();
                    let ds = summarize(&d);
                    (
                        format!("+{:.1} ns ({:+.1}–{:+.1})", ds.median, ds.min, ds.max),
                        format!("≤ no-op + {t:.0} ns"),
                        ds.median <= t,
                    )
                };
                progress(format!(
                    "  {}: {:.1} ns vs no-op {:.1} ns → {ratio}",
                    c.id, rs.median, ns.median
                ));
                kernel_note.push(format!(
                    "{} {:.0}/{:.0}",
                    c.id,
                    summarize(&rk).median,
                    summarize(&nk).median
                ));
                rows.push(Row {
                    id: c.id,
                    measure: c.measure.to_string(),
                    value: rs.fmt(1, " ns"),
                    baseline: format!("no-op XDP {}", ns.fmt(1, " ns")),
                    ratio,
                    target,
                    pass: Some(pass),
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
    notes.push(format!(
        "P1d: of {attempted} RSTs run through the sampled program, {sampled} ({:.1} %) were \
         written to the ring buffer and {full} found it full (counted in \
         `rstmon_samples_dropped_total{{reason=\"ring_full\"}}`); the drain loop read {drained}.",
        100.0 * sampled as f64 / attempted as f64
    ));
    notes.push(format!(
        "P1 cross-check, the kernel's own integer `duration` (real/no-op, ns): {}.",
        kernel_note.join(", ")
    ));
    Ok(rows)
}
