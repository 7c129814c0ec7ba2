//! P3: the highest sampled RST rate the ring buffer and the daemon's drain loop take
//! without loss, and exact accounting of the loss above it.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use aya::programs::{TestRun as _, TestRunOptions};
use rst_common::{PROG_XDP, Stat, TCP_ACK, TCP_RST};
use rst_testkit::{
    frames::Frame,
    loader::{assign_slot, load_object, load_xdp, loopback_ifindex, stat_sum, wire_total, xdp},
    process::pin_thread,
};

use crate::{
    CPU_PACKETS, Opts,
    drainer::{Drainer, take_events},
    progress,
    report::Row,
    stats::si,
};

#[derive(Clone, Copy, Debug)]
struct Trial {
    stalled: bool,
    rate: f64,
    secs: f64,
    attempted: u64,
    counted: u64,
    sampled: u64,
    delivered: u64,
    ring_full: u64,
    rate_limited: u64,
}

impl Trial {
    fn lossless(&self) -> bool {
        self.ring_full == 0 && self.rate_limited == 0 && self.delivered == self.attempted
    }
    fn exact(&self) -> bool {
        self.counted == self.attempted
            && self.sampled == self.delivered
            && self.delivered + self.ring_full + self.rate_limited == self.attempted
    }
    fn achieved(&self) -> f64 {
        self.attempted as f64 / self.secs
    }
    fn line(&self) -> String {
        format!(
            "{}{} RST/s offered for {:.0} s (achieved {}): attempted {}, counted {}, delivered {} + ring-full {} + rate-limited {} = {} ({})",
            if self.stalled {
                "drain loop stalled, "
            } else {
                ""
            },
            si(self.rate),
            self.secs,
            si(self.achieved()),
            self.attempted,
            self.counted,
            self.delivered,
            self.ring_full,
            self.rate_limited,
            self.delivered + self.ring_full + self.rate_limited,
            if self.exact() { "exact" } else { "MISMATCH" }
        )
    }
}

/// Runs the real program with every RST sampled at `rate` per second (paced in 1 ms
/// slots) on one CPU, the daemon's drain loop on the other. `stalled`: the drain loop
/// only starts once the traffic is over, so that the ring buffer overflows.
fn p3_trial(rate: f64, secs: f64, stalled: bool) -> anyhow::Result<Trial> {
    let mut ebpf = load_object(u32::MAX)?;
    assign_slot(&mut ebpf, loopback_ifindex(), 0)?;
    load_xdp(&mut ebpf, PROG_XDP)?;
    let mut events = Some(take_events(&mut ebpf)?);
    let early = if stalled {
        None
    } else {
        events.take().map(Drainer::start)
    };
    let frame = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    let prog = xdp(&ebpf, PROG_XDP);
    let (attempted, el) = thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(u64, f64)> {
            pin_thread(CPU_PACKETS);
            let t0 = Instant::now();
            let mut done = 0u64;
            loop {
                let el = t0.elapsed().as_secs_f64();
                if el >= secs {
                    return Ok((done, el));
                }
                let due = (rate * el) as u64;
                if due > done {
                    let n = (due - done).min(50_000) as u32;
                    prog.test_run(TestRunOptions {
                        data_in: Some(&frame),
                        repeat: n,
                        ..TestRunOptions::new()
                    })?;
                    done += u64::from(n);
                } else {
                    thread::sleep(Duration::from_micros(200));
                }
            }
        })
        .join()
        .map_err(|_| anyhow!("generator panicked"))?
    })?;
    let drainer = match (early, events) {
        (Some(d), _) => d,
        (None, Some(ev)) => Drainer::start(ev),
        (None, None) => bail!("no ring buffer"),
    };
    let delivered = drainer.stop()?;
    Ok(Trial {
        stalled,
        rate,
        secs: el,
        attempted,
        counted: wire_total(&ebpf),
        sampled: stat_sum(&ebpf, Stat::WireSampled),
        delivered,
        ring_full: stat_sum(&ebpf, Stat::WireRingFull),
        rate_limited: stat_sum(&ebpf, Stat::WireRateLimited),
    })
}

pub fn p3(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let probe = if o.quick { 1.0 } else { 2.0 };
    let confirm = if o.quick { 3.0 } else { 10.0 };
    progress(format!(
        "P3: sampled RST rate search ({probe:.0} s probes, {confirm:.0} s confirmation)"
    ));
    let mut lo: Option<Trial> = None;
    let mut hi: Option<Trial> = None;
    let mut trials = Vec::new();
    let mut rate = 100_000.0;
    // Double until a probe loses samples or the generator cannot keep up.
    loop {
        let t = p3_trial(rate, probe, false)?;
        progress(format!("  probe {}", t.line()));
        trials.push(t);
        if !t.lossless() {
            hi = Some(t);
            break;
        }
        lo = Some(t);
        if t.achieved() < 0.9 * rate || rate >= 12_800_000.0 {
            break;
        }
        rate *= 2.0;
    }
    // Bisect between the last lossless and the first lossy rate.
    if let (Some(l), Some(h)) = (lo, hi) {
        let (mut l, mut h) = (l.rate, h.rate);
        for _ in 0..3 {
            let m = (l + h) / 2.0;
            let t = p3_trial(m, probe, false)?;
            progress(format!("  probe {}", t.line()));
            trials.push(t);
            if t.lossless() {
                l = m;
                lo = Some(t);
            } else {
                h = m;
                hi = Some(t);
            }
        }
    }
    // Confirm over the full duration, stepping down if needed.
    let mut best = None;
    let mut r = lo.map(|t| t.rate).unwrap_or(50_000.0);
    for _ in 0..4 {
        let t = p3_trial(r, confirm, false)?;
        progress(format!("  confirm {}", t.line()));
        trials.push(t);
        if t.lossless() {
            best = Some(t);
            break;
        }
        if hi.is_none_or(|h| t.rate < h.rate) {
            hi = Some(t);
        }
        r *= 0.85;
    }
    // Above it: loss must be fully accounted for. If the generator could not outrun the
    // drain loop, make loss happen by stalling the drain loop until the traffic is over.
    let above = match hi {
        Some(h) => p3_trial(h.rate, confirm, false)?,
        None => p3_trial(best.map(|b| b.rate).unwrap_or(r), confirm, true)?,
    };
    progress(format!("  above {}", above.line()));
    trials.push(above);
    let all_exact = trials.iter().all(Trial::exact);
    notes.push(format!(
        "P3 trials (each: fresh object, every RST sampled, daemon's drain loop and \
         64 KiB wakeup threshold): {}.",
        trials
            .iter()
            .map(Trial::line)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let (value, pass) = match best {
        Some(b) => {
            let generator_bound = hi.is_none();
            (
                format!(
                    "{}{} samples/s lossless over {:.0} s{}",
                    if generator_bound { "≥ " } else { "" },
                    si(b.achieved()),
                    b.secs,
                    if generator_bound {
                        " (the generator's limit: no loss at any rate it reached)"
                    } else {
                        ""
                    }
                ),
                b.achieved() >= 200_000.0,
            )
        }
        None => ("no lossless rate found".to_string(), false),
    };
    Ok(vec![
        Row {
            id: "P3",
            measure: "highest sampled RST rate with zero loss over 10 s (one CPU producing, daemon drain loop on the other)".into(),
            value,
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≥ 200 k samples/s".into(),
            pass: Some(pass),
        },
        Row {
            id: "P3",
            measure: format!(
                "above it ({} RST/s offered{}): delivered + ring-full + rate-limited == attempted, exactly, in every trial",
                si(above.rate),
                if above.stalled { ", drain loop stalled until the traffic is over" } else { "" }
            ),
            value: format!(
                "{} + {} + {} = {} of {}",
                above.delivered,
                above.ring_full,
                above.rate_limited,
                above.delivered + above.ring_full + above.rate_limited,
                above.attempted
            ),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "exact".into(),
            pass: Some(all_exact),
        },
    ])
}
