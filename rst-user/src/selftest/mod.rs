//! `rstmon selftest` and the scenario tests: reproduce S1–S7 of docs/classification.md
//! with real sockets in throwaway network namespaces, over IPv4 and IPv6, and compare
//! the cause rstmon names on each side with the expected one.

pub mod scenarios;
pub mod sockets;

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use scenarios::{Flow, SCENARIOS, Scenario};
pub use sockets::{ClientSocket, set_linger0, vanish};

use rst_common::{Attribution, PID_NONE};

use crate::{
    attribute::Names,
    classify::{self, RecvCause, SendCause},
    kernel::KernelLayout,
    netns::Pair,
    present::sample::addr,
    sources::Event,
};

// --- observation -----------------------------------------------------------------------------

/// Samples collected from the ring buffer by a background thread.
#[derive(Clone, Default)]
pub struct Collected(pub Arc<Mutex<Vec<Event>>>);

/// How long [`Collected::wait`] still waits for a sender sample once the receiver's is
/// here (it cannot come later than that; the margin only covers the collector's lock).
const SENDER_SETTLE: Duration = Duration::from_millis(200);

/// What rstmon said about one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub sent: Option<SendCause>,
    pub received: Option<RecvCause>,
    /// Who each side's sample named: `<workload> pid=<pid>/<comm>` or `pid=-`.
    pub sent_by: Option<String>,
    pub received_by: Option<String>,
}

/// The workload and process of a sample, as a selftest row shows them.
pub fn who(names: Option<&Names>, a: &Attribution) -> String {
    let w = names
        .and_then(|n| {
            n.resolve(&[(a.cgroup_id, a.netns)], Duration::from_millis(500))
                .remove(&(a.cgroup_id, a.netns))
                .flatten()
        })
        .unwrap_or_else(|| Names::fallback(a.cgroup_id, a.netns))
        .workload;
    let comm_end = a.comm.iter().position(|&b| b == 0).unwrap_or(16);
    let comm = String::from_utf8_lossy(&a.comm[..comm_end]);
    match a.pid_source {
        PID_NONE => format!("{w} pid=-"),
        _ => format!("{w} pid={}/{comm}", a.pid),
    }
}

impl Collected {
    /// Causes of the first sent and received samples of `flow`.
    pub fn observe(&self, flow: &Flow, layout: &KernelLayout) -> Observed {
        self.observe_with(flow, layout, None)
    }

    /// [`Collected::observe`], naming who each side's sample belongs to.
    pub fn observe_with(
        &self,
        flow: &Flow,
        layout: &KernelLayout,
        names: Option<&Names>,
    ) -> Observed {
        let evs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = Observed::default();
        for ev in evs.iter() {
            match ev {
                Event::Send(s) if o.sent.is_none() => {
                    let local = SocketAddr::new(addr(s.key.family, &s.saddr), s.sport);
                    let remote = SocketAddr::new(addr(s.key.family, &s.daddr), s.dport);
                    if local == flow.sender && remote == flow.receiver {
                        o.sent = Some(classify::classify_send_key(&layout.reasons, &s.key));
                        o.sent_by = Some(who(names, &s.attr));
                    }
                }
                Event::Recv(r) if o.received.is_none() => {
                    let local = SocketAddr::new(addr(r.key.family, &r.saddr), r.sport);
                    let remote = SocketAddr::new(addr(r.key.family, &r.daddr), r.dport);
                    if local == flow.receiver && remote == flow.sender {
                        o.received = Some(classify::classify_recv(&r.key));
                        o.received_by = Some(who(names, &r.attr));
                    }
                }
                _ => {}
            }
        }
        o
    }

    /// Waits until both sides of `flow` were seen, or `timeout`.
    ///
    /// The sender's sample is reserved in the ring buffer before the receiver's (the
    /// send tracepoint fires before the RST leaves, the receive tracepoint after it
    /// arrived) and samples are collected in ring order. So once the receiver's sample
    /// is here, a sender sample that is not will not come (a kernel that does not trace
    /// that reset, before 6.10): the wait then ends [`SENDER_SETTLE`] later instead of
    /// at the timeout.
    pub fn wait(&self, flow: &Flow, layout: &KernelLayout, timeout: Duration) -> Observed {
        let deadline = Instant::now() + timeout;
        let mut received_at = None;
        loop {
            let o = self.observe(flow, layout);
            let now = Instant::now();
            if o.received.is_some() && received_at.is_none() {
                received_at = Some(now);
            }
            let settled = received_at.is_some_and(|t| now.duration_since(t) >= SENDER_SETTLE);
            if (o.sent.is_some() && o.received.is_some()) || settled || now > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One printed row.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub family: &'static str,
    pub side: &'static str,
    pub expected: &'static str,
    pub observed: String,
    /// The workload and process the sample named (`-` when none was seen).
    pub who: String,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.expected == self.observed
    }
}

/// Runs every scenario over both families, observing through `collected`.
pub fn run_all(
    collected: &Collected,
    layout: &KernelLayout,
    names: Option<&Names>,
    mut progress: impl FnMut(&Row),
) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for v6 in [false, true] {
        let family = if v6 { "ipv6" } else { "ipv4" };
        for sc in SCENARIOS {
            let pair = Pair::new()?;
            let flow = sc
                .run(&pair, v6)
                .map_err(|e| io::Error::other(format!("{} {family}: {e}", sc.id)))?;
            collected.wait(&flow, layout, Duration::from_secs(3));
            // Named while the namespaces still exist.
            let o = collected.observe_with(&flow, layout, names);
            drop(pair);
            let name = |c: Option<&'static str>| c.unwrap_or("(none)").to_string();
            for row in [
                Row {
                    id: sc.id,
                    family,
                    side: "sender",
                    expected: sc.sent.label(),
                    observed: name(o.sent.map(SendCause::label)),
                    who: o.sent_by.clone().unwrap_or_else(|| "-".into()),
                },
                Row {
                    id: sc.id,
                    family,
                    side: "receiver",
                    expected: sc.received.label(),
                    observed: name(o.received.map(RecvCause::label)),
                    who: o.received_by.clone().unwrap_or_else(|| "-".into()),
                },
            ] {
                progress(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
