//! A sample as `rstmon watch` shows it: one struct, serialized as a JSON line or
//! rendered as text by [`super::line`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rst_common::{
    AGE_UNKNOWN, Attribution, ConnInfo, FAMILY_IPV6, PID_CONNECT, PID_LISTEN, PID_RESET, TCP_ACK,
    TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, UID_NONE,
};
use serde::Serialize;

use crate::{
    attribute::{Names, Owner},
    classify::Family,
    sources::{self, Event},
};

/// The address in a 16-byte sample field (IPv4 in the first 4 bytes).
pub fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// "RST|ACK"-style rendering of TCP flags; "-" for none.
pub fn flags_str(f: u8) -> String {
    if f == 0 {
        return "-".into();
    }
    let names = [
        (TCP_SYN, "SYN"),
        (TCP_FIN, "FIN"),
        (TCP_RST, "RST"),
        (TCP_PSH, "PSH"),
        (TCP_ACK, "ACK"),
        (TCP_URG, "URG"),
        (TCP_ECE, "ECE"),
        (TCP_CWR, "CWR"),
    ];
    names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// One line of `rstmon watch`, also its JSON form.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Wall-clock time, RFC 3339 with microseconds.
    pub time: String,
    /// `sent` (this host's stack sent it), `received` (a socket accepted it), `wire`
    /// (seen on ingress by XDP).
    pub direction: &'static str,
    /// Cause label; `null` for wire samples (the socket-side hooks name those).
    pub cause: Option<String>,
    /// Kernel reset reason (sent only).
    pub reason: Option<String>,
    pub state: Option<&'static str>,
    pub family: &'static str,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    pub interface: Option<String>,
    /// Flags of the RST itself (wire samples).
    pub rst_flags: Option<String>,
    /// Received RSTs: `socket` (carried a timestamp: the peer's socket sent it),
    /// `stateless` (no timestamp on a timestamp connection) or `unknown`. Egress wire
    /// samples: who made the RST (`stack`, `firewall_reject`, `raw_socket`,
    /// `forwarded`, ..., as `rstmon_egress_resets_total{origin}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Wire samples: `ingress` (XDP) or `egress` (TC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_direction: Option<&'static str>,
    /// Flags of the segment that triggered a sent RST.
    pub trigger_flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_option: Option<bool>,
    /// Ingress wire RSTs and received resets: `accepted`, `challenged` or `ignored`
    /// (docs/classification.md). Set by the join ([`super::join`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    /// Forged-reset signals (possibly none) of an ingress RST whose verdict is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspect: Option<Vec<&'static str>>,
    /// The TTL/hop limit of the peer's handshake, when rstmon saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_ttl: Option<u8>,
    /// A received reset: the wire fields of the very RST the socket accepted (when its
    /// wire sample was taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire: Option<WireFields>,
    /// Who the reset belongs to (sent and received samples; wire samples have none).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Who>,
}

/// The wire view of an accepted RST, on its received-reset sample.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WireFields {
    pub interface: String,
    pub ttl: u8,
    /// IPv4 identification (IPv4 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_id: Option<u16>,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub rst_flags: String,
    pub timestamp_option: bool,
    pub payload_len: u16,
}

/// The owner, process and connection of a sent or received reset (docs/attribution.md).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Who {
    /// Workload name (systemd unit, `container:<id>`, `pod:<ns>/<name>`,
    /// `netns:<name>`, `host`, `cgroup:<path or id>`).
    pub workload: String,
    /// cgroup v2 path, null when the reset had no socket naming one or it is gone.
    pub cgroup: Option<String>,
    pub uid: Option<u32>,
    /// The process, null when it cannot be known exactly.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// How the process is known: `reset` (it made the reset in a system call),
    /// `connect` (it called connect()), `listen` (it called listen() on the listener
    /// the connection was accepted from); null with `pid`.
    pub pid_source: Option<&'static str>,
    /// Network namespace inode.
    pub netns: Option<u32>,
    /// The connection at the reset, null without a full socket.
    pub conn: Option<Conn>,
}

/// `conn` of a sample: read from `tcp_sock` at the reset.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Conn {
    /// Seconds since SYN_SENT/SYN_RECV; null when the start was not seen.
    pub age_s: Option<f64>,
    /// Seconds since the last segment received / the last data sent; null when the
    /// kernel's HZ is unknown.
    pub idle_rx_s: Option<f64>,
    pub idle_tx_s: Option<f64>,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    /// Received and not read by the application.
    pub unread_bytes: u32,
    /// Written by the application and not yet sent.
    pub unsent_bytes: u32,
    /// Sent and not yet acknowledged.
    pub unacked_bytes: u32,
    pub srtt_us: u32,
    pub retrans: u32,
}

impl Who {
    /// From a sample's attribution and connection fields; `owner` names the ids.
    pub fn new(a: &Attribution, c: &ConnInfo, owner: Owner) -> Self {
        let source = match a.pid_source {
            PID_RESET => Some("reset"),
            PID_CONNECT => Some("connect"),
            PID_LISTEN => Some("listen"),
            _ => None,
        };
        let comm = source.map(|_| {
            let end = a.comm.iter().position(|&b| b == 0).unwrap_or(a.comm.len());
            String::from_utf8_lossy(&a.comm[..end]).into_owned()
        });
        let secs = |ms: u32| (ms != u32::MAX).then(|| f64::from(ms) / 1000.0);
        Self {
            workload: owner.workload,
            cgroup: owner.cgroup,
            uid: (a.uid != UID_NONE).then_some(a.uid),
            pid: source.map(|_| a.pid),
            comm,
            pid_source: source,
            netns: (a.netns != 0).then_some(a.netns),
            conn: (c.valid != 0).then(|| Conn {
                age_s: (c.age_ns != AGE_UNKNOWN).then(|| c.age_ns as f64 / 1e9),
                idle_rx_s: secs(c.idle_rx_ms),
                idle_tx_s: secs(c.idle_tx_ms),
                bytes_received: c.bytes_received,
                bytes_acked: c.bytes_acked,
                segs_in: c.segs_in,
                segs_out: c.segs_out,
                unread_bytes: c.unread,
                unsent_bytes: c.unsent,
                unacked_bytes: c.unacked,
                srtt_us: c.srtt_us,
                retrans: c.retrans,
            }),
        }
    }
}

/// Context needed to present an event.
pub struct Presenter<'a> {
    /// The running kernel's `enum sk_rst_reason` (number → name).
    pub reasons: &'a BTreeMap<u32, String>,
    /// ifindex → name of the monitored interfaces.
    pub ifnames: &'a BTreeMap<u32, String>,
    /// CLOCK_MONOTONIC → wall clock offset in ns.
    pub boot_offset_ns: i128,
    /// Names of cgroups and namespaces; without it samples name ids only.
    pub names: Option<&'a Names>,
}

impl Presenter<'_> {
    /// A sample's kernel timestamp (CLOCK_MONOTONIC) as wall-clock RFC 3339.
    pub fn time(&self, ts_ns: u64) -> String {
        super::line::rfc3339_micros(ts_ns as i128 + self.boot_offset_ns)
    }

    /// The interface's name, `if<N>` when it is not (or no longer) monitored.
    pub fn ifname(&self, ifindex: u32) -> String {
        self.ifnames
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    /// The family label of a raw family byte.
    pub fn family(f: u8) -> &'static str {
        Family::from_raw(f).map(Family::label).unwrap_or("unknown")
    }

    /// Who a trace sample belongs to: its ids named when the resolver knows them
    /// (never waits; see [`Names::resolve`] to wait first), else by the ids.
    pub fn who(&self, a: &Attribution, c: &ConnInfo) -> Who {
        let owner = self
            .names
            .and_then(|n| n.lookup(a.cgroup_id, a.netns))
            .unwrap_or_else(|| Names::fallback(a.cgroup_id, a.netns));
        Who::new(a, c, owner)
    }

    /// Presents one event; each source knows its own fields. A verdict record is no
    /// sample of its own ([`super::join`] puts it on the samples of its RST).
    pub fn sample(&self, ev: &Event) -> Option<Sample> {
        match ev {
            Event::Wire(w) => Some(sources::wire::present(self, w)),
            Event::Send(s) => Some(sources::sent::present(self, s)),
            Event::Recv(r) => Some(sources::received::present(self, r)),
            Event::Verdict(_) => None,
        }
    }
}
