//! `rstmon run` end to end, in network namespaces the tests create and remove: exact
//! counting on both sides of a reset, the exposition contract, `promtool check metrics`,
//! one-line user errors, and a clean detach on SIGTERM and SIGINT.
//!
//! Privileged: needs root (BPF, XDP, network namespaces). The tracepoint counters are
//! host-wide (every namespace), so the tests assert before/after deltas and must not
//! overlap: run them with `--test-threads=1` (`cargo xtask test` does).

mod common;

use common::{assert_delta, connect_refused};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    process::{Command, Output},
};

use common::{BIN, Daemon, Metrics, run_command, run_to_exit, xdp_attachment};
use rst_user::netns::{Ns, Pair};

/// Connections per direction and family in the counting test.
const N: i64 = 20;
/// Nothing listens on this port in the test namespaces.
const CLOSED_PORT: u16 = 9;
/// Where the daemon serves, inside its own namespace.
const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9745));
const LISTEN_2: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9746));

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
const WIRE_FLAGS: [&str; 2] = ["rst", "rst_ack"];
/// The sender vocabulary of docs/classification.md, written out so the test checks the contract,
/// not whatever the enum happens to hold.
const SEND_CAUSES: [&str; 15] = [
    "no_listener",
    "no_connection",
    "linger_abort",
    "unread_data_close",
    "data_after_close",
    "timewait",
    "keepalive_timeout",
    "memory_pressure",
    "linger2_timeout",
    "invalid_segment",
    "disconnect",
    "mptcp",
    "firewall_reject",
    "raw_socket",
    "other",
];
/// The receiver vocabulary of docs/classification.md.
const RECV_CAUSES: [&str; 6] = [
    "refused",
    "peer_abort",
    "peer_closed",
    "peer_lost_state",
    "handshake_abort",
    "other",
];

const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WIRE: &str = "rstmon_wire_resets_total";

fn pair() -> Pair {
    Pair::new()
        .unwrap_or_else(|e| panic!("creating namespaces and veth (needs root and iproute2): {e}"))
}

/// Asserts that rstmon's XDP program is attached to `iface`.
fn assert_xdp_attached(ns: &Ns, iface: &str) {
    let text =
        xdp_attachment(ns, iface).unwrap_or_else(|| panic!("{iface}: no XDP program attached"));
    assert!(
        text.contains("rstmon_xdp"),
        "{iface}: an XDP program that is not rstmon's:\n{text}"
    );
}

fn assert_no_xdp(ns: &Ns, iface: &str, ctx: &str) {
    if let Some(text) = xdp_attachment(ns, iface) {
        panic!("{ctx}: {iface} still has an XDP program:\n{text}");
    }
}

/// Runs an `rstmon` command expected to fail with a user error, at the default log
/// level and with backtraces requested: stderr must still be exactly the error line.
fn run_failing(mut cmd: Command, what: &str) -> Output {
    cmd.env_remove("RSTMON_LOG")
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1");
    run_to_exit(cmd, what)
}

/// Non-zero exit; stderr is one line, `rstmon: ...`, naming every `needle`.
fn assert_user_error(out: &Output, what: &str, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{what}: {} / {}", out.status, stderr.trim_end());
    assert!(
        !out.status.success(),
        "{what}: exited 0, want a failure; stderr:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: stderr must be exactly one line, got:\n{stderr}"
    );
    let line = stderr.trim_end();
    assert!(
        line.starts_with("rstmon: "),
        "{what}: error line is not `rstmon: ...`: {line}"
    );
    for n in needles {
        assert!(
            line.contains(n),
            "{what}: error line does not mention {n:?}: {line}"
        );
    }
}

/// S1 in both directions and both families, with the daemon's XDP on A's veth: the
/// sender side, the receiver side and the wire counter each move by exactly N, and the
/// wire counter only for resets arriving at A.
#[test]
fn closed_port_resets_counted_exactly_both_directions() {
    let p = pair();
    let d = Daemon::start(BIN, &p.a, &[&p.a_if], LISTEN);
    let families: [(&str, IpAddr, IpAddr); 2] = [
        ("ipv4", p.a4.into(), p.b4.into()),
        ("ipv6", p.a6.into(), p.b6.into()),
    ];
    for (fam, a_ip, b_ip) in families {
        // (direction, connecting namespace, target, RST|ACKs A's XDP sees)
        let directions = [("A->B", &p.a, b_ip, N), ("B->A", &p.b, a_ip, 0)];
        for (dir, from, to, wire_rst_ack) in directions {
            let ctx = format!("{dir} {fam}, {N} connects to a closed port");
            let before = d.scrape();
            connect_refused(from, SocketAddr::new(to, CLOSED_PORT), N);
            let after = d.scrape();
            let cf = |cause| [("cause", cause), ("family", fam)];
            assert_delta(&after, &before, SENT, &cf("no_listener"), N, &ctx);
            assert_delta(&after, &before, RECEIVED, &cf("refused"), N, &ctx);
            for wfam in FAMILIES {
                for flags in WIRE_FLAGS {
                    let want = if wfam == fam && flags == "rst_ack" {
                        wire_rst_ack
                    } else {
                        0
                    };
                    let labels = [
                        ("interface", p.a_if.as_str()),
                        ("family", wfam),
                        ("flags", flags),
                        ("direction", "ingress"),
                    ];
                    assert_delta(&after, &before, WIRE, &labels, want, &ctx);
                }
            }
            // Every RST|ACK arriving at A was taken by its connecting socket; none is
            // suspect.
            for (verdict, want) in [
                ("accepted", wire_rst_ack),
                ("challenged", 0),
                ("ignored", 0),
            ] {
                let labels = [
                    ("interface", p.a_if.as_str()),
                    ("family", fam),
                    ("verdict", verdict),
                ];
                assert_delta(
                    &after,
                    &before,
                    "rstmon_wire_reset_verdicts_total",
                    &labels,
                    want,
                    &ctx,
                );
            }
            let suspects = common::sum_delta(&after, &before, "rstmon_suspect_resets_total", &[]);
            assert_eq!(suspects, 0, "{ctx}: genuine resets flagged as suspect");
            let others: Vec<String> = after
                .matching(WIRE, &[])
                .iter()
                .filter(|(s, _)| s.labels.get("interface") != Some(&p.a_if))
                .map(|(s, _)| s.to_string())
                .collect();
            assert!(
                others.is_empty(),
                "{ctx}: wire series for unmonitored interfaces: {others:?}"
            );
        }
    }
    d.stop();
    assert_no_xdp(&p.a, &p.a_if, "after SIGTERM");
}

/// Every cause of both vocabularies and every wire series of the monitored interface
/// exist at 0 from the start; build info and XDP attachment are exported; `/` is an
/// HTML landing page linking to /metrics.
#[test]
fn exposition_complete_from_start_and_landing_page() {
    let p = pair();
    let d = Daemon::start(BIN, &p.a, &[&p.a_if], LISTEN);
    let r = d.get("/metrics");
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "/metrics content type {ct:?}"
    );
    let m = Metrics::parse(&r.body);

    let mut missing = Vec::new();
    let mut nonzero = Vec::new();
    let mut check = |name: &str, labels: &[(&str, &str)]| match m.get(name, labels) {
        None => missing.push(common::Series::new(name, labels).to_string()),
        Some(v) if v != 0.0 => nonzero.push(format!("{} = {v}", common::Series::new(name, labels))),
        Some(_) => {}
    };
    for fam in FAMILIES {
        for cause in SEND_CAUSES {
            check(SENT, &[("cause", cause), ("family", fam)]);
        }
        for cause in RECV_CAUSES {
            check(RECEIVED, &[("cause", cause), ("family", fam)]);
        }
        for flags in WIRE_FLAGS {
            for dir in ["ingress", "egress"] {
                check(
                    WIRE,
                    &[
                        ("interface", &p.a_if),
                        ("family", fam),
                        ("flags", flags),
                        ("direction", dir),
                    ],
                );
            }
        }
    }
    assert!(missing.is_empty(), "series missing at start: {missing:#?}");
    assert!(nonzero.is_empty(), "series not 0 at start: {nonzero:#?}");
    let n_sent = m.matching(SENT, &[]).len();
    let n_recv = m.matching(RECEIVED, &[]).len();
    let n_wire = m.matching(WIRE, &[]).len();
    assert_eq!(n_sent, SEND_CAUSES.len() * 2, "unexpected {SENT} series");
    assert_eq!(
        n_recv,
        RECV_CAUSES.len() * 2,
        "unexpected {RECEIVED} series"
    );
    assert_eq!(n_wire, 8, "unexpected {WIRE} series");

    let info = m.matching("rstmon_build_info", &[]);
    assert_eq!(
        info.len(),
        1,
        "want one rstmon_build_info series, got {info:?}"
    );
    let (s, v) = info[0];
    assert_eq!(v, 1.0, "{s} = {v}");
    assert_eq!(
        s.labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{s}"
    );
    let rev = s.labels.get("revision").map(String::as_str).unwrap_or("");
    assert!(
        rev == "unknown" || (rev.len() == 12 && rev.chars().all(|c| c.is_ascii_hexdigit())),
        "{s}: revision is a short git hash"
    );
    assert!(
        s.labels
            .get("rustc")
            .is_some_and(|r| r.starts_with("rustc 1.")),
        "{s}: rustc"
    );
    let kernel = m.matching("rstmon_kernel_info", &[]);
    assert_eq!(
        kernel.len(),
        1,
        "want one rstmon_kernel_info, got {kernel:?}"
    );
    let (s, v) = kernel[0];
    assert_eq!(v, 1.0, "{s} = {v}");
    for (label, file) in [("release", "osrelease"), ("version", "version")] {
        let want = std::fs::read_to_string(format!("/proc/sys/kernel/{file}")).unwrap_or_default();
        assert_eq!(
            s.labels.get(label).map(String::as_str),
            Some(want.trim()),
            "{s}"
        );
    }

    let xdp = m.matching("rstmon_xdp_attached", &[]);
    assert_eq!(
        xdp.len(),
        1,
        "want one rstmon_xdp_attached series, got {xdp:?}"
    );
    let (s, v) = xdp[0];
    assert_eq!(s.labels.get("interface"), Some(&p.a_if), "{s}");
    assert!(
        matches!(
            s.labels.get("mode").map(String::as_str),
            Some("native" | "generic")
        ),
        "{s}: mode is native or generic"
    );
    assert_eq!(v, 1.0, "{s} = {v}");
    for hook in ["tcp:tcp_send_reset", "tcp:tcp_receive_reset"] {
        assert_eq!(
            m.value("rstmon_hook_attached", &[("hook", hook)]),
            1.0,
            "hook {hook}"
        );
    }

    let landing = d.get("/");
    assert_eq!(landing.status, 200, "GET /: {}", landing.body);
    let ct = landing.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "GET /: content type {ct:?}");
    let body = landing.body.to_ascii_lowercase();
    assert!(
        body.contains("<html"),
        "GET / is not HTML:\n{}",
        landing.body
    );
    assert!(
        body.contains("href=\"/metrics\""),
        "GET / has no link to /metrics:\n{}",
        landing.body
    );
    d.stop();
}

/// A real scrape, with non-zero counters, passes `promtool check metrics` with no finding.
#[test]
fn promtool_check_metrics_clean() {
    let p = pair();
    let d = Daemon::start(BIN, &p.a, &[&p.a_if], LISTEN);
    connect_refused(&p.a, SocketAddr::new(p.b4.into(), CLOSED_PORT), 3);
    connect_refused(&p.a, SocketAddr::new(p.b6.into(), CLOSED_PORT), 3);
    let text = d.scrape_text();
    d.stop();
    assert!(text.contains(WIRE), "scrape has no {WIRE}:\n{text}");

    if let Err(e) = rst_testkit::promtool_check_metrics(&text) {
        panic!("{e}");
    }
}

#[test]
fn error_unknown_interface() {
    let ns = Ns::new().unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    let out = run_failing(run_command(&ns, &["no-such-if0"], LISTEN), "-i no-such-if0");
    assert_user_error(&out, "-i no-such-if0", &["no-such-if0"]);
}

/// A log filter that does not parse is one clear line and exit 2, from `--log` and from
/// `RSTMON_LOG` alike (it used to fall back to `info` silently).
#[test]
fn error_bad_log_filter() {
    let ns = Ns::new().unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    let mut flag = run_command(&ns, &[], LISTEN);
    flag.args(["--log", "rstmon=loud"]);
    let out = run_failing(flag, "--log rstmon=loud");
    assert_user_error(&out, "--log rstmon=loud", &["log filter", "rstmon=loud"]);
    assert_eq!(out.status.code(), Some(2), "exit status of a usage error");
    let mut env = run_command(&ns, &[], LISTEN);
    env.env("RSTMON_LOG", "rstmon=loud");
    let out = run_to_exit(env, "RSTMON_LOG=rstmon=loud");
    assert_user_error(
        &out,
        "RSTMON_LOG=rstmon=loud",
        &["log filter", "rstmon=loud"],
    );
}

/// A glob that is not a valid pattern is a clear error too.
#[test]
fn error_bad_interface_pattern() {
    let ns = Ns::new().unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    let out = run_failing(run_command(&ns, &["veth["], LISTEN), "-i veth[");
    assert_user_error(&out, "-i veth[", &["veth["]);
}

#[test]
fn error_missing_privilege() {
    let p = pair();
    let mut cmd = p.a.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        BIN,
        "run",
        "-i",
        &p.a_if,
        "--web.listen-address",
        &LISTEN.to_string(),
    ]);
    let out = run_failing(cmd, "unprivileged");
    assert_user_error(&out, "unprivileged", &["CAP_BPF"]);
    assert_no_xdp(&p.a, &p.a_if, "after the unprivileged run");
}

#[test]
fn error_listen_port_in_use() {
    let p = pair();
    let taken =
        p.a.run(|| TcpListener::bind(LISTEN))
            .and_then(|r| r)
            .unwrap_or_else(|e| panic!("binding {LISTEN} in {}: {e}", p.a.name));
    let out = run_failing(run_command(&p.a, &[&p.a_if], LISTEN), "port in use");
    assert_user_error(
        &out,
        "port in use",
        &["already in use", &LISTEN.to_string()],
    );
    assert_no_xdp(&p.a, &p.a_if, "after failing to listen");
    drop(taken);
}

/// An attach failure from the kernel is one line too, each cause once (aya repeats its
/// source in its message): native XDP on loopback, which has no driver XDP.
#[test]
fn error_native_xdp_unsupported() {
    let ns = Ns::new().unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    let mut cmd = run_command(&ns, &["lo"], LISTEN);
    cmd.args(["--xdp-mode", "native"]);
    let out = run_failing(cmd, "native XDP on lo");
    assert_user_error(&out, "native XDP on lo", &["lo", "XDP"]);
    let line = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "native XDP on lo: {p:?} repeated in: {line}"
        );
    }
    assert_no_xdp(&ns, "lo", "after the failed native attach");
}

/// A second rstmon on an interface that already has the first one's XDP program fails
/// naming the interface, and the first keeps its program and keeps counting.
#[test]
fn error_xdp_already_attached_first_keeps_counting() {
    let p = pair();
    let mut first = Daemon::start(BIN, &p.a, &[&p.a_if], LISTEN);
    assert_xdp_attached(&p.a, &p.a_if);

    let out = run_failing(run_command(&p.a, &[&p.a_if], LISTEN_2), "second rstmon");
    assert_user_error(&out, "second rstmon", &[&p.a_if, "XDP"]);

    first.assert_running("after the second rstmon failed");
    assert_xdp_attached(&p.a, &p.a_if);
    let ctx = "first rstmon, after the second failed";
    let before = first.scrape();
    connect_refused(&p.a, SocketAddr::new(p.b4.into(), CLOSED_PORT), N);
    let after = first.scrape();
    let labels = [
        ("interface", p.a_if.as_str()),
        ("family", "ipv4"),
        ("flags", "rst_ack"),
        ("direction", "ingress"),
    ];
    assert_delta(&after, &before, WIRE, &labels, N, ctx);
    assert_delta(
        &after,
        &before,
        SENT,
        &[("cause", "no_listener"), ("family", "ipv4")],
        N,
        ctx,
    );
    assert_delta(
        &after,
        &before,
        RECEIVED,
        &[("cause", "refused"), ("family", "ipv4")],
        N,
        ctx,
    );
    first.stop();
    assert_no_xdp(&p.a, &p.a_if, "after the first rstmon stopped");
}

/// SIGINT detaches too: exit 0 and no XDP program left on the interface.
#[test]
fn sigint_detaches_and_exits_zero() {
    let p = pair();
    let d = Daemon::start(BIN, &p.a, &[&p.a_if], LISTEN);
    assert_xdp_attached(&p.a, &p.a_if);
    d.stop_with(libc::SIGINT);
    assert_no_xdp(&p.a, &p.a_if, "after SIGINT");
}

/// `--max-trace-samples-per-sec`: a burst of refused connects over the limit leaves the
/// sent and received counters exact, samples at most the limit in each second of the
/// burst (plus what CPUs passing the check at once may add), and accounts for every
/// reset of the tracepoint side as either sampled or rate-limited.
#[test]
fn trace_samples_are_rate_limited_and_counters_stay_exact() {
    const RATE: i64 = 10;
    const CONNECTS: i64 = 300;
    let p = pair();
    let d = rst_testkit::daemon::Rstmon::new(BIN)
        .listen(LISTEN)
        .iface(&p.a_if)
        .args(["--max-trace-samples-per-sec", &RATE.to_string()])
        .try_start(&p.a)
        .unwrap_or_else(|e| panic!("starting rstmon: {e}"));
    let before = d.scrape();
    let t0 = std::time::Instant::now();
    connect_refused(&p.a, SocketAddr::new(p.b4.into(), CLOSED_PORT), CONNECTS);
    let seconds = t0.elapsed().as_secs() as i64 + 2;
    let after = d.scrape();
    let ctx = format!("{CONNECTS} refused connects at a trace sample limit of {RATE}/s");
    let cf = |cause| [("cause", cause), ("family", "ipv4")];
    assert_delta(&after, &before, SENT, &cf("no_listener"), CONNECTS, &ctx);
    assert_delta(&after, &before, RECEIVED, &cf("refused"), CONNECTS, &ctx);
    let resets = common::sum_delta(&after, &before, SENT, &[])
        + common::sum_delta(&after, &before, RECEIVED, &[]);
    let sampled = common::sum_delta(
        &after,
        &before,
        "rstmon_samples_submitted_total",
        &[("source", "trace")],
    );
    let limited = common::sum_delta(
        &after,
        &before,
        "rstmon_samples_dropped_total",
        &[("source", "trace"), ("reason", "rate_limited")],
    );
    let cpus = rst_user::attach::possible_cpus() as i64;
    println!("{ctx}: {resets} resets, {sampled} sampled, {limited} rate-limited in <{seconds} s");
    assert_eq!(sampled + limited, resets, "{ctx}: sampled + limited");
    assert!(
        sampled <= (RATE + cpus) * seconds,
        "{ctx}: {sampled} sampled in under {seconds} s"
    );
    assert!(limited > 0, "{ctx}: nothing was rate-limited");
    d.stop();
}

/// `skb:kfree_skb` is attached by default where the kernel's drops carry a reason, and
/// `--no-drop-tracing` leaves it unattached (the other hooks stay).
#[test]
fn no_drop_tracing_leaves_kfree_skb_unattached() {
    const HOOK: &str = "rstmon_hook_attached";
    let p = pair();
    let layout = rst_user::kernel::probe().unwrap_or_else(|e| panic!("probing the kernel: {e}"));
    let reasons = rst_user::kernel::verdict::tells_challenged(&layout.verdict);
    for (args, want) in [(&[][..], reasons), (&["--no-drop-tracing"][..], false)] {
        let d = rst_testkit::daemon::Rstmon::new(BIN)
            .listen(LISTEN)
            .iface(&p.a_if)
            .args(args.iter().copied())
            .try_start(&p.a)
            .unwrap_or_else(|e| panic!("starting rstmon {args:?}: {e}"));
        let m = d.scrape();
        let kfree = m.get(HOOK, &[("hook", "skb:kfree_skb")]) == Some(1.0);
        assert_eq!(kfree, want, "rstmon {args:?}: skb:kfree_skb attached");
        assert_eq!(
            m.get(HOOK, &[("hook", "tcp:tcp_receive_reset")]),
            Some(1.0),
            "rstmon {args:?}: tcp_receive_reset"
        );
        d.stop();
    }
}
