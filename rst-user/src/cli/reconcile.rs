//! `rstmon reconcile [--seconds N]`: the kernel's own MIB counters of this network
//! namespace (`/proc/net/snmp`, `/proc/net/netstat`) against rstmon's counts of the same
//! namespace over the same N seconds, one line per counter. rstmon loads its programs
//! standalone for the window (as `watch` does); its tracepoints' hits are counted by the
//! network namespace of the socket (or of the device of the trigger) in
//! `WORKLOAD_COUNTERS`, so resets of other namespaces are left out. The correspondences
//! are docs/reconcile.md.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rst_common::{
    KIND_VERDICT, NO_TRIGGER, RecvKey, SIDE_RECEIVED, SIDE_SENT, SendKey, VERDICT_CHALLENGED,
    recv_key_of, send_key_of, state,
};
use tokio::sync::watch;
use tracing::info;

use super::{args::ReconcileArgs, config, require_privileges, xdp_mode};
use crate::{
    attach::{Monitor, controller::Controller, select::Selection},
    classify::{SendCause, classify_send_key},
    export::snapshot::Counters,
    sources::{verdict, workload},
    sys,
};

/// The MIB counters compared, in output order (nstat's names).
pub const COUNTERS: [&str; 9] = [
    "TcpOutRsts",
    "TcpEstabResets",
    "TcpAttemptFails",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPAbortOnTimeout",
    "TcpExtTCPAbortOnLinger",
    "TcpExtTCPChallengeACK",
];

/// Counters read only to explain a difference.
const AUX: [&str; 4] = [
    "TcpExtTCPAbortFailed",
    "TcpExtTCPACKSkippedChallenge",
    "TcpExtTCPSYNChallenge",
    "TcpExtEmbryonicRsts",
];

/// Parses `/proc/net/snmp` or `/proc/net/netstat`: pairs of lines `Prefix: names...` /
/// `Prefix: values...`, named as nstat does (`TcpOutRsts`, `TcpExtTCPAbortOnData`).
pub fn parse_mib(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            // Signed counters (MaxConn -1) are not counters rstmon compares.
            if let Ok(v) = v.parse::<u64>() {
                out.insert(format!("{p1}{n}"), v);
            }
        }
    }
    out
}

/// The MIB counters of the caller's network namespace.
pub fn read_mib() -> anyhow::Result<BTreeMap<String, u64>> {
    let mut m = BTreeMap::new();
    for path in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        m.extend(parse_mib(&text));
    }
    Ok(m)
}

/// rstmon's counts of one namespace at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ours {
    pub sent: Vec<(SendKey, u64)>,
    pub received: Vec<(RecvKey, u64)>,
    /// Challenged verdicts over the monitored interfaces.
    pub challenged: u64,
    /// The kernel's skips of rstmon's tracing hooks (recursion protection).
    pub missed: u64,
}

/// rstmon's side of each counter, from `Ours` deltas, with the reason names of this
/// kernel (`reasons`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    pub values: BTreeMap<&'static str, u64>,
    /// Keepalive timeouts (they are in TCPAbortOnTimeout with the RST-less timeouts).
    pub keepalive: u64,
}

fn sum_sent(sent: &[(SendKey, u64)], f: impl Fn(&SendKey) -> bool) -> u64 {
    sent.iter().filter(|(k, _)| f(k)).map(|(_, v)| v).sum()
}

/// Maps rstmon's counts of one window onto the kernel's counters (docs/reconcile.md).
pub fn map_ours(
    sent: &[(SendKey, u64)],
    received: &[(RecvKey, u64)],
    challenged: u64,
    reasons: &BTreeMap<u32, String>,
) -> Mapped {
    let reason = |k: &SendKey| reasons.get(&k.reason).map(String::as_str);
    let cause = |k: &SendKey| classify_send_key(reasons, k);
    let recv = |states: &[u8]| -> u64 {
        received
            .iter()
            .filter(|(k, _)| states.contains(&k.state))
            .map(|(_, v)| v)
            .sum()
    };
    let by_reason = |name: &str| sum_sent(sent, |k| reason(k) == Some(name));
    let mut v = BTreeMap::new();
    v.insert("TcpOutRsts", sum_sent(sent, |_| true));
    // tcp_set_state(TCP_CLOSE) from ESTABLISHED or CLOSE_WAIT: a socket that accepted
    // an RST there, or one that aborted itself (its active RST) from ESTABLISHED.
    let aborted = sum_sent(sent, |k| {
        k.trig_flags == NO_TRIGGER
            && matches!(
                cause(k),
                SendCause::LingerAbort
                    | SendCause::Disconnect
                    | SendCause::UnreadDataClose
                    | SendCause::KeepaliveTimeout
            )
    });
    v.insert(
        "TcpEstabResets",
        recv(&[state::ESTABLISHED, state::CLOSE_WAIT]) + aborted,
    );
    // tcp_done() in SYN_SENT or SYN_RECV.
    v.insert("TcpAttemptFails", recv(&[state::SYN_SENT, state::SYN_RECV]));
    // tcp_close() counts a zero-linger close as TCPAbortOnData.
    let linger = sum_sent(sent, |k| {
        k.trig_flags == NO_TRIGGER && cause(k) == SendCause::LingerAbort
    });
    v.insert(
        "TcpExtTCPAbortOnData",
        by_reason("TCP_ABORT_ON_DATA") + linger,
    );
    v.insert("TcpExtTCPAbortOnClose", by_reason("TCP_ABORT_ON_CLOSE"));
    v.insert("TcpExtTCPAbortOnMemory", by_reason("TCP_ABORT_ON_MEMORY"));
    let keepalive = by_reason("TCP_KEEPALIVE_TIMEOUT");
    v.insert("TcpExtTCPAbortOnTimeout", keepalive);
    v.insert("TcpExtTCPAbortOnLinger", by_reason("TCP_ABORT_ON_LINGER"));
    v.insert("TcpExtTCPChallengeACK", challenged);
    Mapped {
        values: v,
        keepalive,
    }
}

/// One output line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub counter: &'static str,
    pub kernel: i64,
    pub rstmon: i64,
    /// `agree` or `differ`.
    pub verdict: &'static str,
    /// Why they differ, when known; `None` for an unexplained difference.
    pub why: Option<String>,
}

impl Line {
    pub fn unexplained(&self) -> bool {
        self.verdict == "differ" && self.why.is_none()
    }
}

/// Compares the kernel's deltas (`k`, by nstat name) with rstmon's (`ours`), explaining
/// what the kernel's own auxiliary counters account for.
pub fn compare(k: &BTreeMap<String, i64>, ours: &Mapped, missed: i64) -> Vec<Line> {
    let kv = |n: &str| k.get(n).copied().unwrap_or(0);
    let failed = kv("TcpExtTCPAbortFailed");
    let rto = (kv("TcpExtTCPAbortOnTimeout") - ours.keepalive as i64).max(0);
    COUNTERS
        .iter()
        .map(|&counter| {
            let kernel = kv(counter);
            let rstmon = ours.values.get(counter).copied().unwrap_or(0) as i64;
            let more = kernel - rstmon;
            let mut why: Option<String> = None;
            if more > 0 && more <= missed && counter != "TcpExtTCPChallengeACK" {
                why = Some(format!(
                    "the kernel skipped rstmon's hooks {missed} times (rstmon_hook_missed_total)"
                ));
            }
            if why.is_none() && more != 0 {
                why = match counter {
                    "TcpOutRsts" | "TcpExtTCPAbortOnClose" | "TcpExtTCPAbortOnMemory"
                    | "TcpExtTCPAbortOnLinger"
                        if more > 0 && more <= failed =>
                    {
                        Some(format!(
                            "{more} active resets were counted but never sent (TCPAbortFailed {failed})"
                        ))
                    }
                    "TcpEstabResets" if more > 0 && more <= rto => Some(format!(
                        "{more} established connections timed out without an RST (TCPAbortOnTimeout less keepalive)"
                    )),
                    "TcpAttemptFails"
                        if more > 0 && more <= rto + kv("TcpExtEmbryonicRsts") =>
                    {
                        Some(format!(
                            "{more} handshakes ended by a connect timeout or an RST to a request socket (EmbryonicRsts {}), neither a socket's tcp_receive_reset",
                            kv("TcpExtEmbryonicRsts")
                        ))
                    }
                    "TcpExtTCPAbortOnTimeout" if more > 0 => Some(format!(
                        "{more} retransmission or SYN timeouts, which send no RST"
                    )),
                    "TcpExtTCPChallengeACK" => {
                        let skipped = kv("TcpExtTCPACKSkippedChallenge");
                        let syn = kv("TcpExtTCPSYNChallenge");
                        (kernel + skipped - syn == rstmon).then(|| {
                            format!(
                                "challenge ACKs for SYNs (TCPSYNChallenge {syn}) and rate-limited ones (TCPACKSkippedChallenge {skipped})"
                            )
                        })
                    }
                    _ => None,
                };
            }
            Line {
                counter,
                kernel,
                rstmon,
                verdict: if more == 0 { "agree" } else { "differ" },
                why,
            }
        })
        .collect()
}

/// The lines as text, one per counter.
pub fn render(lines: &[Line], seconds: f64, netns: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "network namespace {netns}, {seconds:.1} s: kernel MIB delta vs rstmon delta"
    );
    let _ = writeln!(
        s,
        "{:<26} {:>8} {:>8}  verdict",
        "counter", "kernel", "rstmon"
    );
    for l in lines {
        let why = match (&l.why, l.verdict) {
            (Some(w), _) => format!(" ({w})"),
            (None, "differ") => " (unexplained)".into(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<26} {:>8} {:>8}  {}{why}",
            l.counter, l.kernel, l.rstmon, l.verdict
        );
    }
    s
}

/// The inode number of the caller's network namespace.
pub fn own_netns() -> anyhow::Result<u32> {
    let m = fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    Ok(m.ino() as u32)
}

fn ours_now(counters: &Mutex<Counters>, netns: u32, ifnames: &BTreeMap<u32, String>) -> Ours {
    let c = counters.lock().unwrap_or_else(|p| p.into_inner());
    let mut sent: BTreeMap<u64, u64> = BTreeMap::new();
    let mut received: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, v) in workload::collect(&c.workloads, c.ncpus) {
        if k.netns != netns {
            continue;
        }
        match k.side {
            SIDE_SENT => *sent.entry(k.key).or_default() += v,
            SIDE_RECEIVED => *received.entry(k.key).or_default() += v,
            _ => {}
        }
    }
    let v = verdict::collect(&c.verdicts, c.ncpus, ifnames, &BTreeMap::new());
    Ours {
        sent: sent.into_iter().map(|(k, v)| (send_key_of(k), v)).collect(),
        received: received
            .into_iter()
            .map(|(k, v)| (recv_key_of(k), v))
            .collect(),
        challenged: verdict::total(&v, KIND_VERDICT, VERDICT_CHALLENGED),
        missed: c
            .hook_fds
            .iter()
            .map(|(_, fd)| sys::bpf::recursion_misses(fd.as_fd()).unwrap_or(0))
            .sum(),
    }
}

fn delta<K: PartialEq + Copy>(after: &[(K, u64)], before: &[(K, u64)]) -> Vec<(K, u64)> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before
                .iter()
                .find(|(kb, _)| kb == k)
                .map(|(_, v)| *v)
                .unwrap_or(0);
            (*k, a.saturating_sub(b))
        })
        .collect()
}

/// Runs the comparison; `Ok(false)` when a difference is unexplained.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<bool> {
    require_privileges()?;
    let netns = own_netns()?;
    let selection = Selection::new(&args.common.interfaces)?;
    let mut cfg = config(&args.common);
    // Nothing reads samples here.
    cfg.max_samples_per_sec = 0;
    let monitor = Monitor::start(&cfg)?;
    let (programs, _events, counters) = monitor.split();
    let reasons = programs.layout.reasons.clone();
    let counters = Arc::new(Mutex::new(counters));
    let controller = Controller::start(
        programs,
        selection,
        xdp_mode(&args.common),
        counters.clone(),
    )
    .await?;
    let interfaces = controller.interfaces();
    let (stop_tx, stop_rx) = watch::channel(false);
    let follower = tokio::spawn(controller.run(stop_rx));
    let ifnames = || {
        interfaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ifnames()
    };

    let k0 = read_mib()?;
    let o0 = ours_now(&counters, netns, &ifnames());
    let start = Instant::now();
    info!(
        seconds = args.seconds,
        "counting (Ctrl-C ends the window early)"
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
        _ = super::shutdown_signal() => {}
    }
    let o1 = ours_now(&counters, netns, &ifnames());
    let k1 = read_mib()?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    drop(follower.await.context("interface controller")?);

    let kd: BTreeMap<String, i64> = COUNTERS
        .iter()
        .chain(AUX.iter())
        .map(|n| {
            let g = |m: &BTreeMap<String, u64>| m.get(*n).copied().unwrap_or(0) as i64;
            (n.to_string(), g(&k1) - g(&k0))
        })
        .collect();
    let mapped = map_ours(
        &delta(&o1.sent, &o0.sent),
        &delta(&o1.received, &o0.received),
        o1.challenged.saturating_sub(o0.challenged),
        &reasons,
    );
    let lines = compare(&kd, &mapped, o1.missed.saturating_sub(o0.missed) as i64);
    print!("{}", render(&lines, seconds, netns));
    Ok(!lines.iter().any(Line::unexplained))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rst_common::FAMILY_IPV4;

    #[test]
    fn parses_snmp_pairs_with_nstat_names() {
        let text =
            "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 7\n";
        let m = parse_mib(text);
        assert_eq!(m.get("TcpOutRsts"), Some(&7));
        assert_eq!(m.get("IpDefaultTTL"), Some(&64));
        assert!(!m.contains_key("TcpMaxConn"));
    }

    fn reasons() -> BTreeMap<u32, String> {
        [
            (1, "NO_SOCKET"),
            (14, "TCP_STATE"),
            (5, "TCP_ABORT_ON_CLOSE"),
        ]
        .into_iter()
        .map(|(n, s)| (n, s.to_string()))
        .collect()
    }

    fn send(reason: u32, trig: u8, bits: u8) -> SendKey {
        SendKey {
            reason,
            state: 0,
            family: FAMILY_IPV4,
            trig_flags: trig,
            bits,
        }
    }

    fn recv(state: u8) -> RecvKey {
        RecvKey {
            state,
            family: FAMILY_IPV4,
            origin: 0,
            _pad: [0; 5],
        }
    }

    #[test]
    fn maps_and_compares_a_window() {
        // A zero-linger abort (TCP_STATE + SEND_LINGER0), an unread-data close, a
        // refused connect (no listener) and the two accepted RSTs.
        let sent = vec![
            (send(14, NO_TRIGGER, rst_common::SEND_LINGER0), 1),
            (send(5, NO_TRIGGER, 0), 1),
            (send(1, rst_common::TCP_SYN, 0), 1),
        ];
        let received = vec![(recv(state::ESTABLISHED), 2), (recv(state::SYN_SENT), 1)];
        let m = map_ours(&sent, &received, 0, &reasons());
        assert_eq!(m.values["TcpOutRsts"], 3);
        assert_eq!(m.values["TcpEstabResets"], 4);
        assert_eq!(m.values["TcpAttemptFails"], 1);
        assert_eq!(m.values["TcpExtTCPAbortOnData"], 1);
        assert_eq!(m.values["TcpExtTCPAbortOnClose"], 1);
        let mut k: BTreeMap<String, i64> = [
            ("TcpOutRsts", 3),
            ("TcpEstabResets", 4),
            ("TcpAttemptFails", 1),
            ("TcpExtTCPAbortOnData", 1),
            ("TcpExtTCPAbortOnClose", 1),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        let lines = compare(&k, &m, 0);
        assert!(lines.iter().all(|l| l.verdict == "agree"), "{lines:?}");
        // A retransmission timeout explains one more EstabResets; nothing explains one
        // more OutRsts.
        k.insert("TcpEstabResets".into(), 5);
        k.insert("TcpExtTCPAbortOnTimeout".into(), 1);
        k.insert("TcpOutRsts".into(), 4);
        let lines = compare(&k, &m, 0);
        let get = |n: &str| lines.iter().find(|l| l.counter == n).unwrap().clone();
        assert!(get("TcpEstabResets").why.is_some());
        assert!(get("TcpExtTCPAbortOnTimeout").why.is_some());
        assert!(get("TcpOutRsts").unexplained());
        let text = render(&lines, 10.0, 1);
        assert!(text.contains("TcpOutRsts"), "{text}");
        assert!(text.contains("(unexplained)"), "{text}");
        // A rate-limited challenge ACK is explained by TCPACKSkippedChallenge.
        let m = map_ours(&[], &[], 2, &reasons());
        let k: BTreeMap<String, i64> = [
            ("TcpExtTCPChallengeACK", 1),
            ("TcpExtTCPACKSkippedChallenge", 1),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        let l = compare(&k, &m, 0);
        let ca = l
            .iter()
            .find(|l| l.counter == "TcpExtTCPChallengeACK")
            .unwrap();
        assert_eq!((ca.verdict, ca.why.is_some()), ("differ", true));
    }
}
