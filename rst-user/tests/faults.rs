//! The fault tier: rstmon under hostile conditions, in namespaces the tests create and
//! remove. Every RST is counted and every sample accounted for through a 10 s consumer
//! stall; more than 1 100 interfaces are counted exactly (past the fast-path slots);
//! `--max-samples-per-sec` holds over all CPUs whether the RSTs arrive on one CPU or on
//! all of them; a bounded soak neither loses counts nor grows memory.
//!
//! (SIGKILLs: `interfaces.rs`; idle-connection floods: `http.rs`; least privilege:
//! `privileges.rs`.)
//!
//! Privileged (root). Run with `--test-threads=1` (`cargo xtask test` does): the
//! tracepoint counters are host-wide.

mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{Daemon, Metrics, rstmon};
use rst_common::{TCP_ACK, TCP_RST, TCP_SYN};
use rst_testkit::{
    frames::Frame,
    generator::{Generator, generate},
    net::{mac_of, make_multiqueue},
};
use rst_user::netns::{Ns, Pair};

const WIRE: &str = "rstmon_wire_resets_total";
const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const SUBMITTED: &str = "rstmon_samples_submitted_total";
const DELIVERED: &str = "rstmon_samples_received_total";
const DROPPED: &str = "rstmon_samples_dropped_total";
const ERRORS: &str = "rstmon_errors_total";

fn pair() -> Pair {
    Pair::new().unwrap_or_else(|e| panic!("creating namespaces and veth (needs root): {e}"))
}

fn generator() -> Generator {
    Generator::load().unwrap_or_else(|e| panic!("loading the traffic generator: {e}"))
}

/// Sum of every series of `name` having `labels`.
fn total(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.matching(name, labels).iter().map(|(_, v)| v).sum()
}

/// Samples of `source` the kernel accounted for: submitted plus dropped for any reason.
fn attempted(m: &Metrics, source: &str) -> f64 {
    total(m, SUBMITTED, &[("source", source)]) + total(m, DROPPED, &[("source", source)])
}

/// An RST|ACK from the pair's `b` end to a closed port on its `a` end, as `b` would put
/// it on the wire: `a`'s XDP counts it, `a`'s stack finds no socket and drops it.
fn rst_b_to_a(p: &Pair) -> Vec<u8> {
    let mut f = Frame::tcp4(TCP_RST | TCP_ACK)
        .with_ipv4(|ip| {
            ip.src = p.b4.octets();
            ip.dst = p.a4.octets();
        })
        .with_tcp(|t| {
            t.sport = 40000;
            t.dport = 9;
        });
    f.dst_mac = mac_of(&p.a, &p.a_if).expect("a's MAC");
    f.src_mac = mac_of(&p.b, &p.b_if).expect("b's MAC");
    f.build().bytes
}

fn wait_scrape(
    d: &Daemon,
    what: &str,
    within: Duration,
    mut ok: impl FnMut(&Metrics) -> bool,
) -> Metrics {
    let t0 = Instant::now();
    loop {
        let m = d.scrape();
        if ok(&m) {
            return m;
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGSTOP the daemon for 10 s while 30 000 RST/s flow: the kernel keeps counting (wire
/// == sent, exactly), and every sample is either delivered or counted as dropped.
#[test]
fn consumer_stall_loses_no_count_and_accounts_for_every_sample() {
    let p = pair();
    let d = rstmon().iface(&p.a_if).start(&p.a);
    // SYNs from a to a closed port on b: b's stack answers each with an RST|ACK (sent,
    // no_listener, in b's namespace) that arrives on a's monitored interface (wire).
    let mut f = Frame::tcp4(TCP_SYN)
        .with_ipv4(|ip| {
            ip.src = p.a4.octets();
            ip.dst = p.b4.octets();
        })
        .with_tcp(|t| {
            t.sport = 41000;
            t.dport = 9;
        });
    f.dst_mac = mac_of(&p.b, &p.b_if).expect("b's MAC");
    f.src_mac = mac_of(&p.a, &p.a_if).expect("a's MAC");
    let syn = f.build().bytes;
    // b has no XDP program: GRO gives it the NAPI context that frames XDP_TX'd into the
    // pair need (see rst_testkit::net::set_gro).
    let b_if = p.b_if.clone();
    p.b.run(|| rst_testkit::net::set_gro(&b_if))
        .expect("entering b")
        .expect("GRO on b");
    // b would resolve a's MAC with ARP and drop what overflows its queue meanwhile,
    // after the tracepoint counted it: give b the neighbour entry up front.
    let a_mac = mac_of(&p.a, &p.a_if).expect("a's MAC");
    let lladdr = a_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    p.b.ip(&[
        "neigh",
        "replace",
        &p.a4.to_string(),
        "lladdr",
        &lladdr,
        "dev",
        &p.b_if,
        "nud",
        "permanent",
    ])
    .expect("neighbour entry");

    let before = d.scrape();
    let gen_ = generator();
    let a_idx = p.a.ifindex(&p.a_if).expect("ifindex");
    let (rate, secs) = (30_000.0, 14);
    let pid = d.pid();
    let (sent, el) = thread::scope(|s| {
        let traffic = s.spawn(|| {
            generate(
                &p.a,
                &gen_,
                &syn,
                a_idx,
                rate,
                Duration::from_secs(secs),
                &[0],
            )
            .expect("generating SYNs")
        });
        thread::sleep(Duration::from_secs(2));
        // SAFETY: plain kill(2) on the daemon we started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        thread::sleep(Duration::from_secs(10));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "SIGCONT");
        traffic.join().expect("traffic thread")
    });
    let labels = [
        ("interface", p.a_if.as_str()),
        ("family", "ipv4"),
        ("flags", "rst_ack"),
        ("direction", "ingress"),
    ];
    // Everything sent has arrived and been drained once the counters stop moving.
    let mut last = -1.0;
    let after = wait_scrape(&d, "counters settle", Duration::from_secs(30), |m| {
        let w = m.value(WIRE, &labels);
        let settled = w == last && total(m, SUBMITTED, &[]) == total(m, DELIVERED, &[]);
        last = w;
        settled
    });
    let wire = after.delta(&before, WIRE, &labels);
    let no_listener = after.delta(
        &before,
        SENT,
        &[("cause", "no_listener"), ("family", "ipv4")],
    );
    println!(
        "stall: {sent} SYNs in {:.1} s ({:.0}/s), 10 s SIGSTOP: wire +{wire}, sent no_listener +{no_listener}",
        el.as_secs_f64(),
        sent as f64 / el.as_secs_f64()
    );
    // Every SYN was answered and every answer counted on a's wire, exactly; the sent
    // side counts the same RSTs, plus whatever else the host's namespaces reset meanwhile
    // (the tracepoints are host-wide).
    assert_eq!(wire, sent as i64, "every SYN's RST counted on a's wire");
    assert!(
        no_listener >= wire,
        "sent no_listener +{no_listener} < wire +{wire}"
    );

    let d_wire = attempted(&after, "wire") - attempted(&before, "wire");
    assert_eq!(
        d_wire as i64, wire,
        "every wire RST: submitted, ring_full or rate_limited"
    );
    let sent_all = total(&after, SENT, &[]) - total(&before, SENT, &[]);
    let recv_all = total(&after, RECEIVED, &[]) - total(&before, RECEIVED, &[]);
    let d_trace = attempted(&after, "trace") - attempted(&before, "trace");
    assert_eq!(
        d_trace,
        sent_all + recv_all,
        "every trace hit: submitted or ring_full"
    );
    for source in ["wire", "trace"] {
        let sub = after.value(SUBMITTED, &[("source", source)]);
        let got = after.value(DELIVERED, &[("source", source)]);
        assert_eq!(sub, got, "{source}: submitted == received after the stall");
    }
    let ring_full = after.delta(
        &before,
        DROPPED,
        &[("source", "wire"), ("reason", "ring_full")],
    ) + after.delta(
        &before,
        DROPPED,
        &[("source", "trace"), ("reason", "ring_full")],
    );
    println!("stall: samples dropped while stopped (ring full): {ring_full}");
    assert!(
        ring_full > 0,
        "a 10 s stall at 30 000/s must fill the ring buffer"
    );
    d.stop();
}

/// 1 100 interfaces, more than the fast-path slots (`--wire-slots 1000`): every one is
/// attached and every one counted exactly.
#[test]
fn more_than_1100_interfaces_are_all_counted_exactly() {
    const N: usize = 1100;
    const PER: usize = 3;
    let (a, b) = (Ns::new().expect("ns"), Ns::new().expect("ns"));
    let tag = std::process::id() % 1000;
    let name = |i: usize| format!("f{tag}x{i}");
    let peer = |i: usize| format!("g{tag}x{i}");
    let batch = |ns: Option<&Ns>, lines: String| {
        let mut cmd = Command::new("ip");
        if let Some(ns) = ns {
            cmd.args(["-n", &ns.name]);
        }
        let mut child = cmd
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.as_bytes())
            .expect("writing the batch");
        assert!(
            child.wait().expect("ip -batch").success(),
            "ip -batch failed"
        );
    };
    let t0 = Instant::now();
    batch(
        None,
        (0..N)
            .map(|i| {
                format!(
                    "link add {} netns {} type veth peer name {} netns {}\n",
                    name(i),
                    a.name,
                    peer(i),
                    b.name
                )
            })
            .collect(),
    );
    batch(
        Some(&b),
        (0..N)
            .map(|i| format!("link set {} up\n", peer(i)))
            .collect(),
    );
    let d = rstmon()
        .args(["-i", &format!("f{tag}x*"), "--wire-slots", "1000"])
        .start(&a);
    batch(
        Some(&a),
        (0..N)
            .map(|i| format!("link set {} up\n", name(i)))
            .collect(),
    );
    let m = wait_scrape(
        &d,
        "every interface attached",
        Duration::from_secs(120),
        |m| m.matching("rstmon_xdp_attached", &[]).len() == N,
    );
    println!(
        "{N} veth pairs created and attached in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        m.value(
            "rstmon_interface_skipped_total",
            &[("reason", "attach_failed")]
        ),
        0.0
    );

    // Carrier comes on asynchronously (linkwatch): a frame sent before the device is
    // operationally up is dropped by its still-inactive qdisc. Wait for every end.
    let up = |ns: &Ns| {
        let out = ns
            .output("ip", &["-o", "link", "show", "up"])
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("{tag}x")) && l.contains("state UP"))
            .count()
    };
    let t1 = Instant::now();
    while up(&a) < N || up(&b) < N {
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "interfaces not operationally up"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // PER RSTs into each interface, from its peer, with an AF_PACKET socket in b.
    let frame = Frame::tcp4(TCP_RST).build().bytes;
    let peers: Vec<u32> = (0..N)
        .map(|i| b.ifindex(&peer(i)).expect("peer ifindex"))
        .collect();
    b.run(|| {
        // SAFETY: a plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        for ifindex in &peers {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = *ifindex as i32;
            sll.sll_halen = 6;
            for _ in 0..PER {
                // SAFETY: valid buffer and address for the call.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const sll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    n,
                    frame.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    })
    .expect("entering b");
    let want = (N * PER) as f64;
    let t0 = Instant::now();
    let m = loop {
        let m = d.scrape();
        let got = total(&m, WIRE, &[("flags", "rst"), ("direction", "ingress")]);
        if got >= want {
            break m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "every RST counted: {got} of {want} after 10 s (slots hold {}, overflow {})",
            (0..1000)
                .map(|i| m.value(
                    WIRE,
                    &[
                        ("interface", &name(i)),
                        ("family", "ipv4"),
                        ("flags", "rst"),
                        ("direction", "ingress"),
                    ]
                ))
                .sum::<f64>(),
            (1000..N)
                .map(|i| m.value(
                    WIRE,
                    &[
                        ("interface", &name(i)),
                        ("family", "ipv4"),
                        ("flags", "rst"),
                        ("direction", "ingress"),
                    ]
                ))
                .sum::<f64>(),
        );
        thread::sleep(Duration::from_millis(100));
    };
    let mut wrong = Vec::new();
    for i in 0..N {
        let v = m.value(
            WIRE,
            &[
                ("interface", &name(i)),
                ("family", "ipv4"),
                ("flags", "rst"),
                ("direction", "ingress"),
            ],
        );
        if v != PER as f64 {
            wrong.push((name(i), v));
        }
    }
    assert!(
        wrong.is_empty(),
        "interfaces not counted exactly: {:?}",
        &wrong[..wrong.len().min(10)]
    );
    assert_eq!(total(&m, WIRE, &[]), want, "nothing else counted");
    assert_eq!(m.value(ERRORS, &[("kind", "counter_map_full")]), 0.0);
    assert!(
        m.get(
            WIRE,
            &[
                ("interface", "other"),
                ("family", "ipv4"),
                ("flags", "rst"),
                ("direction", "ingress")
            ]
        )
        .is_none()
    );
    println!(
        "{N} interfaces ({} past the 1000 slots) counted exactly: {want} RSTs",
        N - 1000
    );
    d.stop();
}

/// Reads CLOCK_MONOTONIC_COARSE, the clock the kernel's sample limiter counts seconds on.
fn coarse_now() -> Duration {
    // SAFETY: all-zero is a valid timespec; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps until the coarse clock is half-way through a second: the limiter's samples of
/// that second are all taken by then (at 10 000 RST/s, 2 000 take 0.2 s).
fn sleep_to_mid_second() {
    let frac = coarse_now().subsec_millis();
    let wait = (1500 - frac) % 1000;
    thread::sleep(Duration::from_millis(u64::from(wait.max(1))));
}

/// `--max-samples-per-sec 2000` means 2 000 samples per second over all CPUs, within
/// 10 %, whether 10 000 RST/s arrive on one CPU or are spread over all of them.
#[test]
fn sample_rate_holds_over_all_cpus() {
    const LIMIT: f64 = 2000.0;
    const WINDOWS: u64 = 4;
    let ncpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for cpus in [vec![0usize], (0..ncpus).collect::<Vec<_>>()] {
        let p = pair();
        make_multiqueue(&p, ncpus).expect("multi-queue veth");
        let d = rstmon()
            .iface(&p.a_if)
            .args(["--max-samples-per-sec", "2000"])
            .start(&p.a);
        let frame = rst_b_to_a(&p);
        let gen_ = generator();
        let b_idx = p.b.ifindex(&p.b_if).expect("ifindex");
        let secs = WINDOWS + 4;
        let (got, traffic) = thread::scope(|s| {
            let traffic = s.spawn(|| {
                generate(
                    &p.b,
                    &gen_,
                    &frame,
                    b_idx,
                    10_000.0,
                    Duration::from_secs(secs),
                    &cpus,
                )
                .expect("generating RSTs")
            });
            thread::sleep(Duration::from_millis(1500));
            sleep_to_mid_second();
            let m0 = d.scrape();
            thread::sleep(Duration::from_secs(WINDOWS));
            let m1 = d.scrape();
            let got = m1.delta(&m0, SUBMITTED, &[("source", "wire")]) as f64 / WINDOWS as f64;
            (got, traffic.join().expect("traffic"))
        });
        println!(
            "sample rate on CPUs {cpus:?}: {got:.0}/s for a limit of {LIMIT} ({} RSTs sent at {:.0}/s)",
            traffic.0,
            traffic.0 as f64 / traffic.1.as_secs_f64()
        );
        assert!(
            (got - LIMIT).abs() <= 0.1 * LIMIT,
            "CPUs {cpus:?}: {got:.0} samples/s, want {LIMIT} ± 10 %"
        );
        d.stop();
    }
}

/// 30 s at 50 000 RST/s: every RST counted, every sample accounted for, and the daemon's
/// resident memory grows by at most 1 MiB after the first seconds.
#[test]
fn soak_counts_exactly_without_growing() {
    let p = pair();
    let d = rstmon().iface(&p.a_if).start(&p.a);
    let frame = rst_b_to_a(&p);
    let gen_ = generator();
    let b_idx = p.b.ifindex(&p.b_if).expect("ifindex");
    let labels = [
        ("interface", p.a_if.as_str()),
        ("family", "ipv4"),
        ("flags", "rst_ack"),
        ("direction", "ingress"),
    ];
    let before = d.scrape();
    let (sent, rss) = thread::scope(|s| {
        let traffic = s.spawn(|| {
            generate(
                &p.b,
                &gen_,
                &frame,
                b_idx,
                50_000.0,
                Duration::from_secs(30),
                &[0],
            )
            .expect("generating RSTs")
        });
        thread::sleep(Duration::from_secs(5));
        let early = d.proc().status_kib("VmRSS");
        thread::sleep(Duration::from_secs(24));
        let late = d.proc().status_kib("VmRSS");
        (traffic.join().expect("traffic").0, (early, late))
    });
    let after = wait_scrape(&d, "everything counted", Duration::from_secs(10), |m| {
        m.delta(&before, WIRE, &labels) >= sent as i64
    });
    let wire = after.delta(&before, WIRE, &labels);
    println!(
        "soak: {sent} RSTs in 30 s, wire +{wire}, RSS {} KiB after 5 s, {} KiB after 29 s",
        rss.0, rss.1
    );
    assert_eq!(wire, sent as i64, "every RST counted");
    assert_eq!(
        (attempted(&after, "wire") - attempted(&before, "wire")) as i64,
        wire,
        "every wire RST: submitted, ring_full or rate_limited"
    );
    assert!(
        rss.1 <= rss.0 + 1024,
        "RSS grew from {} KiB to {} KiB",
        rss.0,
        rss.1
    );
    d.stop();
}
