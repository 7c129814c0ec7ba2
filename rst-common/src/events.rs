//! Ring-buffer records. The first byte of every record is its kind.

use core::mem::size_of;

use crate::keys::{RecvKey, SendKey};

// Event kinds: the first byte of every ring-buffer record.
pub const EVENT_WIRE: u8 = 1;
pub const EVENT_SEND: u8 = 2;
pub const EVENT_RECV: u8 = 3;

/// An RST segment seen on the wire: by XDP on ingress, by the TC program on egress.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireEvent {
    /// [`EVENT_WIRE`].
    pub kind: u8,
    pub family: u8,
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub ifindex: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// IPv4 addresses use the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// IPv4 identification, 0 for IPv6.
    pub ip_id: u16,
    pub payload_len: u16,
    /// 1 when the TCP timestamp option is present.
    pub has_ts: u8,
    /// Number of VLAN tags in front of the IP header.
    pub vlan_depth: u8,
    /// [`crate::DIR_INGRESS`] or [`crate::DIR_EGRESS`].
    pub direction: u8,
    /// Egress only: who made it (`EGRESS_*`); 0 on ingress.
    pub origin: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<WireEvent>() == 72);

/// A reset the host's TCP stack sent ([`SendEvent`]) or a socket on this host accepted
/// ([`RecvEvent`]). Addresses and ports are the local socket's first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEvent<K> {
    /// [`EVENT_SEND`] or [`EVENT_RECV`].
    pub kind: u8,
    pub _pad0: [u8; 7],
    /// The counter key of the same hit: everything the classifier needs.
    pub key: K,
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub _pad1: [u8; 4],
}

/// `tcp:tcp_send_reset` sample.
pub type SendEvent = TraceEvent<SendKey>;
/// `tcp:tcp_receive_reset` sample.
pub type RecvEvent = TraceEvent<RecvKey>;
const _: () = assert!(size_of::<SendEvent>() == 64);
const _: () = assert!(size_of::<RecvEvent>() == 64);
