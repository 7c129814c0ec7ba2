//! A sample as `rstmon watch` shows it: one struct, serialized as a JSON line or
//! rendered as text by [`super::line`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rst_common::{
    FAMILY_IPV6, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};
use serde::Serialize;

use crate::{
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
}

/// Context needed to present an event.
pub struct Presenter<'a> {
    /// The running kernel's `enum sk_rst_reason` (number → name).
    pub reasons: &'a BTreeMap<u32, String>,
    /// ifindex → name of the monitored interfaces.
    pub ifnames: &'a BTreeMap<u32, String>,
    /// CLOCK_MONOTONIC → wall clock offset in ns.
    pub boot_offset_ns: i128,
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

    /// Presents one event; each source knows its own fields.
    pub fn sample(&self, ev: &Event) -> Sample {
        match ev {
            Event::Wire(w) => sources::wire::present(self, w),
            Event::Send(s) => sources::sent::present(self, s),
            Event::Recv(r) => sources::received::present(self, r),
        }
    }
}
