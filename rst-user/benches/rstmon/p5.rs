//! P5: host CPU per RST the kernel sends, and what a tracing program adds to it: none,
//! rstmon's tracing hooks (`Monitor::start`, whatever it attaches), and bpftrace counting
//! `tcp:tcp_send_reset` by reason, interleaved in the same run.
//!
//! The RSTs: SYNs to a closed port, sent by the live-frames generator from one end of a
//! veth pair on CPU 0 at a fixed rate; the other end's TCP stack answers every one with
//! an RST (reason `NO_SOCKET`), which crosses back and is dropped.
//!
//! The measure sees softirq time: this kernel has no IRQ time accounting
//! (`CONFIG_IRQ_TIME_ACCOUNTING` off), so softirq work is charged to the task it
//! interrupts, and the frames are both sent and received inside the generator's
//! BPF_PROG_TEST_RUN call (the receive softirq runs when that call re-enables bottom
//! halves). CPU = the generator thread's CPU time (CLOCK_THREAD_CPUTIME_ID) + every
//! other thread of this process (the drain loop of rstmon's samples) + every
//! `ksoftirqd` (softirq deferred there) + the bpftrace process, all from schedstat (ns).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{Context as _, anyhow, bail};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use rst_common::TCP_SYN;
use rst_testkit::{
    generator::Generator,
    net::{mac_of, rst_to, set_gro, tcp_mib},
    process::{Proc, pin_thread, thread_cpu_ns},
};
use rst_user::{
    attach::{Config, Monitor},
    netns::Pair,
    sys::bpf::sys_bpf,
};

use crate::{
    CPU_CONSUMER, CPU_PACKETS, DEFAULT_TRACE_SAMPLES_PER_SEC, Opts,
    drainer::Drainer,
    ext::{Guard, bpftrace},
    progress,
    report::Row,
    stats::{Summary, si, summarize},
};

/// Target: rstmon's added CPU per sent RST against bpftrace's.
const P5_VS_BPFTRACE: f64 = 0.5;
/// rstmon's program on `tcp_send_reset`.
const RSTMON_SEND_PROG: &str = rst_common::PROG_SEND_RESET;
/// The name the kernel gives bpftrace's program: the tracepoint's.
const BPFTRACE_PROG_NAME: &str = "tcp_send_reset";
/// The bpftrace program of the baseline.
const BPFTRACE_PROG: &str = "tracepoint:tcp:tcp_send_reset { @[args->reason] = count(); }";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    None,
    Rstmon,
    Bpftrace,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::None => "no tracing program",
            Variant::Rstmon => "rstmon",
            Variant::Bpftrace => "bpftrace",
        }
    }
}

/// The tracing side as the daemon loads it by default (its trace sampling rate).
fn daemon_config() -> Config {
    Config {
        max_trace_samples_per_sec: DEFAULT_TRACE_SAMPLES_PER_SEC,
        ..Config::default()
    }
}

/// The PIDs of every `ksoftirqd/N`.
fn ksoftirqds() -> Vec<Proc> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
                .map(Proc)
                .filter(|p| p.comm().starts_with("ksoftirqd/"))
                .collect()
        })
        .unwrap_or_default()
}

/// Busy (non-idle, non-iowait) clock ticks of every CPU from /proc/stat: a coarse
/// cross-check that sees the whole host, other jobs included.
fn host_busy_ticks() -> u64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    v.iter().take(8).sum::<u64>() - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0)
}

/// A running `bpftrace -e BPFTRACE_PROG`, pinned to the consumer CPU.
struct Bpftrace {
    guard: Guard,
    stdout: mpsc::Receiver<String>,
}

impl Bpftrace {
    fn start() -> anyhow::Result<Self> {
        let bin = bpftrace().context("bpftrace not found (`cargo xtask bench` installs it)")?;
        let mut cmd = Command::new(bin);
        cmd.args(["-e", BPFTRACE_PROG])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut guard = Guard::spawn(&mut cmd, Some(CPU_CONSUMER), libc::SIGINT)?;
        let out = guard.child.stdout.take().context("bpftrace stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("Attaching") => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                _ => bail!("bpftrace did not attach its probe"),
            }
        }
        Ok(Self { guard, stdout: rx })
    }

    fn proc(&self) -> Proc {
        Proc(self.guard.pid())
    }

    /// Stops it (SIGINT: it prints its map) and returns the sum of its counts.
    fn stop(mut self) -> u64 {
        self.guard.stop();
        let mut total = 0;
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_millis(500)) {
            // `@[1]: 123`
            if let Some((_, n)) = l.rsplit_once("]: ") {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
        total
    }
}

/// One measurement: SYNs at `rate` for `dur` from the generator thread on CPU 0.
struct Sample {
    /// RSTs the tracing program counted over its whole attachment, for a traced one.
    counted: Option<u64>,
    sent: u64,
    rsts: u64,
    /// All of it, the generator thread's included.
    cpu_ns: u64,
    /// The generator thread's (sending, and the softirq that receives and answers).
    gen_ns: u64,
    busy_ticks: u64,
}

impl Sample {
    fn with_count(self, counted: u64) -> Self {
        Self {
            counted: Some(counted),
            ..self
        }
    }

    /// False when the tracing program saw more resets than this measurement sent
    /// (beyond 0.5 %): resets from elsewhere on the host (the hooks are host-wide) were
    /// traced meanwhile, and their cost would be charged to this measurement.
    fn clean(&self) -> bool {
        self.counted
            .is_none_or(|c| c.saturating_sub(self.rsts) <= self.rsts / 200)
    }

    fn ns_per_rst(&self) -> f64 {
        self.cpu_ns as f64 / self.rsts.max(1) as f64
    }
}

/// Sends `rate` SYNs per second for `dur` (calls every 10 ms) and measures the CPU.
fn measure(
    pair: &Pair,
    gen_: &Generator,
    frame: &[u8],
    a_idx: u32,
    rate: f64,
    dur: Duration,
    extra: Option<Proc>,
) -> anyhow::Result<Sample> {
    let me = Proc(std::process::id() as libc::pid_t);
    let softirqds = ksoftirqds();
    let others = |soft: &[Proc]| -> u64 {
        me.cpu_ns()
            + soft.iter().map(Proc::cpu_ns).sum::<u64>()
            + extra.map(|p| p.cpu_ns()).unwrap_or(0)
    };
    let r0 = pair.b.run(tcp_mib)??["OutRsts"];
    let b0 = host_busy_ticks();
    let o0 = others(&softirqds);
    let (sent, gen_cpu) = thread::scope(|s| {
        s.spawn(|| {
            pair.a.run(|| -> anyhow::Result<(u64, u64)> {
                pin_thread(CPU_PACKETS);
                let c0 = thread_cpu_ns();
                let t0 = Instant::now();
                let mut sent = 0u64;
                while t0.elapsed() < dur {
                    let due = (rate * t0.elapsed().as_secs_f64()) as u64;
                    if due > sent {
                        let n = (due - sent).min(1 << 20) as u32;
                        gen_.send(frame, a_idx, n)?;
                        sent += u64::from(n);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Ok((sent, thread_cpu_ns() - c0))
            })
        })
        .join()
        .map_err(|_| anyhow!("generator thread panicked"))
    })???;
    // Let the last frames and samples be processed and drained.
    thread::sleep(Duration::from_millis(300));
    let o1 = others(&softirqds);
    let b1 = host_busy_ticks();
    let r1 = pair.b.run(tcp_mib)??["OutRsts"];
    Ok(Sample {
        counted: None,
        sent,
        rsts: r1 - r0,
        cpu_ns: gen_cpu + o1.saturating_sub(o0),
        gen_ns: gen_cpu,
        busy_ticks: b1 - b0,
    })
}

/// (run time ns, runs) of the loaded programs named `name` (the kernel keeps 15
/// characters of a name), summed: `bpf_prog_info.run_time_ns`/`run_cnt`, which the
/// kernel keeps while BPF statistics are on.
fn prog_run_stats(name: &str) -> (u64, u64) {
    let want = &name.as_bytes()[..name.len().min(15)];
    let mut total = (0, 0);
    for info in aya::programs::loaded_programs().flatten() {
        if info.name() != want {
            continue;
        }
        let Ok(fd) = info.fd() else { continue };
        // SAFETY: all-zero is a valid bpf_prog_info and a valid bpf_attr.
        let mut pi: bpf_prog_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.info.bpf_fd = fd.as_fd().as_raw_fd() as u32;
        attr.info.info_len = size_of::<bpf_prog_info>() as u32;
        attr.info.info = (&raw mut pi) as u64;
        // SAFETY: attr points to an info buffer of info_len bytes that outlives the call.
        if unsafe { sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.is_ok() {
            total.0 += pi.run_time_ns;
            total.1 += pi.run_cnt;
        }
    }
    total
}

/// ns per run of the programs named `name` over `f` (which runs them), with BPF run-time
/// statistics on meanwhile (`BPF_ENABLE_STATS`; they add two clock reads to every run).
fn with_run_stats<T>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, f64, u64)> {
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let (t0, n0) = prog_run_stats(name);
    let r = f()?;
    let (t1, n1) = prog_run_stats(name);
    drop(stats);
    let runs = n1.saturating_sub(n0);
    Ok((r, t1.saturating_sub(t0) as f64 / runs.max(1) as f64, runs))
}

pub fn p5(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 2 } else { 20 };
    let rate = 200_000.0;
    let dur = Duration::from_secs(1);
    progress(format!(
        "P5: CPU per sent RST (SYNs to a closed port at {}/s on CPU {CPU_PACKETS}), no tracing \
         program / rstmon's hooks / bpftrace, {rounds} interleaved rounds of {:.0} s windows; \
         target: rstmon adds ≤ {P5_VS_BPFTRACE}× what bpftrace adds",
        si(rate),
        dur.as_secs_f64()
    ));
    let pair = Pair::new().context("creating the veth pair")?;
    let b_if = pair.b_if.clone();
    // NAPI at the receiving end, which frames transmitted by XDP_TX into the pair need.
    pair.b.run(|| set_gro(&b_if))??;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_002, TCP_SYN);
    let gen_ = Generator::load().context("loading the XDP_TX generator")?;
    // Check the RSTs come back, and warm up (the neighbour entry, caches).
    let w = measure(
        &pair,
        &gen_,
        &frame,
        a_idx,
        rate,
        Duration::from_millis(500),
        None,
    )?;
    if w.rsts == 0 {
        bail!("the SYNs sent into the pair are not answered by RSTs (TcpOutRsts stays put)");
    }

    // N R N B N R N B … N: every traced measurement sits between two untraced ones, and
    // what it adds is taken against their mean, so a drift of the machine cancels.
    let mut seq = Vec::new();
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            (Variant::Rstmon, Variant::Bpftrace)
        } else {
            (Variant::Bpftrace, Variant::Rstmon)
        };
        seq.extend([Variant::None, x, Variant::None, y]);
    }
    seq.push(Variant::None);
    let mut results: Vec<(Variant, Sample)> = Vec::new();
    let mut checks = Vec::new();
    for (n, &v) in seq.iter().enumerate() {
        let s = match v {
            Variant::None => measure(&pair, &gen_, &frame, a_idx, rate, dur, None)?,
            Variant::Rstmon => {
                let m = Monitor::start(&daemon_config())?;
                let (programs, events, counters) = m.split();
                let drainer = Drainer::start(events);
                let s = measure(&pair, &gen_, &frame, a_idx, rate, dur, None)?;
                let snap = counters.snapshot(&programs.layout, &Default::default());
                let counted: u64 = snap.sent.values().sum();
                let _ = drainer.stop()?;
                drop(programs);
                checks.push(format!("rstmon {counted}/{}", s.rsts));
                s.with_count(counted)
            }
            Variant::Bpftrace => {
                let b = Bpftrace::start()?;
                let s = measure(&pair, &gen_, &frame, a_idx, rate, dur, Some(b.proc()))?;
                let counted = b.stop();
                checks.push(format!("bpftrace {counted}/{}", s.rsts));
                s.with_count(counted)
            }
        };
        progress(format!(
            "  {}/{} {:>18}: {} SYNs, {} RSTs, {:.0} ns CPU per RST ({:.0} generator + softirq, {:.0} elsewhere)",
            n + 1,
            seq.len(),
            v.label(),
            s.sent,
            s.rsts,
            s.ns_per_rst(),
            s.gen_ns as f64 / s.rsts.max(1) as f64,
            (s.cpu_ns - s.gen_ns) as f64 / s.rsts.max(1) as f64,
        ));
        results.push((v, s));
    }
    // What a traced measurement adds over the mean of its two untraced neighbours, in
    // total and outside the generator thread (consumers, ksoftirqd).
    let added = |want: Variant, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
        (1..results.len() - 1)
            .filter(|&i| results[i].0 == want && results[i].1.clean())
            .map(|i| f(&results[i].1) - (f(&results[i - 1].1) + f(&results[i + 1].1)) / 2.0)
            .collect()
    };
    let total = |s: &Sample| s.ns_per_rst();
    let elsewhere = |s: &Sample| (s.cpu_ns - s.gen_ns) as f64 / s.rsts.max(1) as f64;
    let add_r = added(Variant::Rstmon, &total);
    let add_b = added(Variant::Bpftrace, &total);
    let sr = summarize(&add_r);
    let sb = summarize(&add_b);
    let ratio = sr.median / sb.median;
    let excluded = results.iter().filter(|(_, s)| !s.clean()).count();
    let of = |v: Variant| -> Vec<f64> {
        results
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, s)| s.ns_per_rst())
            .collect()
    };
    // The tracing programs' own run time per reset, from the kernel's BPF statistics, in
    // two more windows (statistics on only there: they cost every run two clock reads).
    let (_, rstmon_prog_ns, rstmon_runs) = with_run_stats(RSTMON_SEND_PROG, || {
        let m = Monitor::start(&daemon_config())?;
        let (programs, events, _counters) = m.split();
        let drainer = Drainer::start(events);
        let s = measure(&pair, &gen_, &frame, a_idx, rate, dur, None)?;
        let _ = drainer.stop()?;
        drop(programs);
        Ok(s)
    })?;
    let bt = Bpftrace::start()?;
    let (_, bpftrace_prog_ns, bpftrace_runs) = with_run_stats(BPFTRACE_PROG_NAME, || {
        measure(&pair, &gen_, &frame, a_idx, rate, dur, Some(bt.proc()))
    })?;
    bt.stop();
    progress(format!(
        "  program run time per reset (BPF statistics): rstmon {rstmon_prog_ns:.0} ns \
         ({rstmon_runs} runs), bpftrace {bpftrace_prog_ns:.0} ns ({bpftrace_runs} runs)"
    ));
    let base = summarize(&of(Variant::None));
    let samples: Vec<&Sample> = results.iter().map(|(_, s)| s).collect();
    let fmt = |s: &Summary| {
        format!(
            "{:+.0} ns ({:+.0}–{:+.0}, n={})",
            s.median, s.min, s.max, s.n
        )
    };
    let busy_ns = |v: Variant| -> f64 {
        let b: Vec<f64> = results
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, s)| s.busy_ticks as f64 * 1e9 / clk_tck() / s.rsts.max(1) as f64)
            .collect();
        summarize(&b).median
    };
    let lost: u64 = samples.iter().map(|s| s.sent.saturating_sub(s.rsts)).sum();
    let sent: u64 = samples.iter().map(|s| s.sent).sum();
    notes.push(format!(
        "P5: {sent} SYNs sent in all, {lost} not answered by an RST within the window \
         (TcpOutRsts of the receiving namespace). {excluded} traced measurements left out \
         because their tracing program counted more resets than were sent (others on the \
         host sent resets meanwhile: the hooks are host-wide). Added CPU: a traced \
         measurement against the mean of the untraced ones just before and after it. Sent resets counted by the tracing \
         programs (over their whole attachment) / RSTs in their window: {}. Of what they \
         add, outside the generator thread (consumer threads, ksoftirqd): rstmon {}, \
         bpftrace {}. Cross-check from /proc/stat (all CPUs, busy ticks of \
         {:.0} Hz, other jobs on the host included), ns per RST: none {:.0}, rstmon {:.0}, \
         bpftrace {:.0}. The bpftrace program: `{BPFTRACE_PROG}` (a classic tracepoint: the \
         kernel formats the tracepoint's record for it); rstmon's hooks are whatever \
         `Monitor::start` attaches, with its ring-buffer samples drained by the daemon's \
         drain loop on CPU {CPU_CONSUMER}.",
        checks.join(", "),
        fmt(&summarize(&added(Variant::Rstmon, &elsewhere))),
        fmt(&summarize(&added(Variant::Bpftrace, &elsewhere))),
        clk_tck(),
        busy_ns(Variant::None),
        busy_ns(Variant::Rstmon),
        busy_ns(Variant::Bpftrace),
    ));
    Ok(vec![
        Row {
            id: "P5",
            measure: format!(
                "host CPU per sent RST (SYN to a closed port, {}/s), no tracing program: generator + softirq (schedstat, softirq charged to the task it interrupts)",
                si(rate)
            ),
            value: base.fmt(0, " ns"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            pass: None,
        },
        Row {
            id: "P5",
            measure: "CPU per sent RST added by rstmon's tracing side (Monitor::start, samples drained), against bpftrace counting tcp_send_reset by reason".into(),
            value: format!("rstmon {}", fmt(&sr)),
            baseline: format!("bpftrace {}", fmt(&sb)),
            ratio: if sb.median > 0.0 {
                format!("{ratio:.2}× bpftrace's (ratio of the medians)")
            } else {
                "inconclusive: bpftrace's median is not above 0 (noise)".into()
            },
            target: format!("≤ {P5_VS_BPFTRACE}× bpftrace's"),
            // No verdict when the baseline itself is lost in the noise.
            pass: (sb.median > 0.0).then_some(ratio <= P5_VS_BPFTRACE),
        },
        Row {
            id: "P5",
            measure: "the tracing program's own run time per sent RST (kernel BPF statistics, a window of each with statistics on); bpftrace's excludes the record the kernel builds for a classic tracepoint".into(),
            value: format!("rstmon `{RSTMON_SEND_PROG}` {rstmon_prog_ns:.0} ns (n={rstmon_runs})"),
            baseline: format!("bpftrace's program {bpftrace_prog_ns:.0} ns (n={bpftrace_runs})"),
            ratio: format!("{:.2}× bpftrace's", rstmon_prog_ns / bpftrace_prog_ns),
            target: "—".into(),
            pass: None,
        },
    ])
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
