//! S1–S7 over IPv4 and IPv6 against the real daemon: exact deltas of
//! `rstmon_resets_sent_total{cause}`, `rstmon_resets_received_total{cause}` and
//! `rstmon_wire_resets_total` on /metrics, and agreement with the kernel's own SNMP
//! counters (nstat) of the namespaces involved. Needs root; run with --test-threads=1
//! (the tracepoint counters are host-wide).

mod common;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use common::{BIN, Daemon, sum_delta as sum};
use rst_user::{
    classify::{Family, RecvCause, SendCause},
    netns::{Ns, Pair},
    selftest::SCENARIOS,
};

const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WIRE: &str = "rstmon_wire_resets_total";

fn nstat(ns: &Ns) -> BTreeMap<String, u64> {
    ns.nstat()
        .unwrap_or_else(|e| panic!("nstat in {}: {e}", ns.name))
}

fn nstat_delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, key: &str) -> i64 {
    let get = |m: &BTreeMap<String, u64>| m.get(key).copied().unwrap_or(0) as i64;
    get(after) - get(before)
}

/// Runs scenario `id` over `family` with the daemon on the client's (receiver's) veth.
fn scenario(id: &str, v6: bool) {
    let sc = SCENARIOS
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no scenario {id}"));
    let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
    let fam = family.label();
    let pair = Pair::new().expect("namespaces and veth pair");
    let listen: SocketAddr = "127.0.0.1:9745".parse().expect("address");
    let daemon = Daemon::start(BIN, &pair.a, &[&pair.a_if], listen);

    let before = daemon.scrape();
    let (ns_a0, ns_b0) = (nstat(&pair.a), nstat(&pair.b));
    sc.run(&pair, v6)
        .unwrap_or_else(|e| panic!("{id} {fam}: running the situation: {e}"));
    // The counters are updated synchronously by the hooks; give the last segment time
    // to cross the veth.
    std::thread::sleep(Duration::from_millis(200));
    let after = daemon.scrape();
    let (ns_a1, ns_b1) = (nstat(&pair.a), nstat(&pair.b));
    daemon.stop();

    let ctx = format!("{id} ({}) over {fam}", sc.title);
    // The kernel skips a tracepoint program that would nest inside another tracing
    // program on the same CPU; rstmon counts those misses. Any here means something else
    // on the host ran BPF tracing programs at the same moment, and the deltas below
    // would be short by that much.
    let missed = sum(&after, &before, "rstmon_hook_missed_total", &[]);
    assert_eq!(
        missed, 0,
        "{ctx}: the kernel skipped rstmon's hooks {missed} times"
    );
    // Sender side: exactly one reset, with the expected cause.
    for cause in SendCause::ALL {
        let want = i64::from(*cause == sc.sent);
        let got = after.delta(&before, SENT, &[("cause", cause.label()), ("family", fam)]);
        assert_eq!(got, want, "{ctx}: {SENT}{{cause={cause}}} delta");
    }
    // Receiver side: exactly one accepted reset, with the expected cause.
    for cause in RecvCause::ALL {
        let want = i64::from(*cause == sc.received);
        let got = after.delta(
            &before,
            RECEIVED,
            &[("cause", cause.label()), ("family", fam)],
        );
        assert_eq!(got, want, "{ctx}: {RECEIVED}{{cause={cause}}} delta");
    }
    // The wire: the one RST arrives on the client's interface, bare when it answers a
    // segment that carried ACK, RST|ACK otherwise.
    let bare = matches!(sc.sent, SendCause::NoConnection | SendCause::DataAfterClose);
    let flags = if bare { "rst" } else { "rst_ack" };
    let wire_total = sum(
        &after,
        &before,
        WIRE,
        &[("interface", pair.a_if.as_str()), ("direction", "ingress")],
    );
    assert_eq!(wire_total, 1, "{ctx}: wire resets on {}", pair.a_if);
    assert_eq!(
        after.delta(
            &before,
            WIRE,
            &[
                ("interface", pair.a_if.as_str()),
                ("family", fam),
                ("flags", flags),
                ("direction", "ingress"),
            ]
        ),
        1,
        "{ctx}: wire {flags} on {}",
        pair.a_if
    );

    // The verdict of that RST: a socket took it; and no genuine reset is suspect.
    let verdict = |v: &str| {
        after.delta(
            &before,
            "rstmon_wire_reset_verdicts_total",
            &[
                ("interface", pair.a_if.as_str()),
                ("family", fam),
                ("verdict", v),
            ],
        )
    };
    assert_eq!(verdict("accepted"), 1, "{ctx}: verdict accepted");
    for v in ["challenged", "ignored"] {
        assert_eq!(verdict(v), 0, "{ctx}: verdict {v}");
    }
    let suspects = sum(&after, &before, "rstmon_suspect_resets_total", &[]);
    assert_eq!(suspects, 0, "{ctx}: genuine resets flagged as suspect");

    // The kernel's own counters agree where they cover the case.
    let b = |k: &str| nstat_delta(&ns_b1, &ns_b0, k);
    let a = |k: &str| nstat_delta(&ns_a1, &ns_a0, k);
    assert_eq!(b("TcpOutRsts"), 1, "{ctx}: server TcpOutRsts");
    assert_eq!(a("TcpOutRsts"), 0, "{ctx}: client TcpOutRsts");
    match sc.sent {
        SendCause::UnreadDataClose => {
            assert_eq!(b("TcpExtTCPAbortOnClose"), 1, "{ctx}: TCPAbortOnClose")
        }
        // tcp_close() counts a zero-linger abort as TCPAbortOnData.
        SendCause::LingerAbort => assert_eq!(b("TcpExtTCPAbortOnData"), 1, "{ctx}: TCPAbortOnData"),
        _ => assert_eq!(
            b("TcpExtTCPAbortOnClose") + b("TcpExtTCPAbortOnData"),
            0,
            "{ctx}: no socket abort on the server"
        ),
    }
    match sc.received {
        RecvCause::Refused => {
            assert_eq!(a("TcpAttemptFails"), 1, "{ctx}: client TcpAttemptFails");
            assert_eq!(a("TcpEstabResets"), 0, "{ctx}: client TcpEstabResets");
        }
        _ => {
            assert_eq!(a("TcpEstabResets"), 1, "{ctx}: client TcpEstabResets");
            assert_eq!(a("TcpAttemptFails"), 0, "{ctx}: client TcpAttemptFails");
        }
    }
}

macro_rules! scenario_tests {
    ($($name:ident => ($id:literal, $v6:literal)),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenario($id, $v6);
            }
        )+
    };
}

scenario_tests! {
    s1_no_listener_ipv4 => ("S1", false),
    s1_no_listener_ipv6 => ("S1", true),
    s2_request_timeout_ipv4 => ("S2", false),
    s2_request_timeout_ipv6 => ("S2", true),
    s3_unread_data_ipv4 => ("S3", false),
    s3_unread_data_ipv6 => ("S3", true),
    s4_data_after_close_ipv4 => ("S4", false),
    s4_data_after_close_ipv6 => ("S4", true),
    s5_lost_state_ipv4 => ("S5", false),
    s5_lost_state_ipv6 => ("S5", true),
    s6_keepalive_ipv4 => ("S6", false),
    s6_keepalive_ipv6 => ("S6", true),
    s7_linger_abort_ipv4 => ("S7", false),
    s7_linger_abort_ipv6 => ("S7", true),
}
