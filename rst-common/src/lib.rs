//! Layouts shared by the eBPF programs (`rst-ebpf`) and the daemon (`rst-user`).
//!
//! Every struct that crosses the kernel/user boundary is `#[repr(C)]`, has explicit
//! padding, holds no `bool`, and carries a compile-time size assertion so that a change
//! on one side cannot silently disagree with the other.
#![no_std]

#[cfg(feature = "frames")]
pub mod frames;
pub mod parse;

use core::mem::size_of;

/// Per-CPU hash map: [`WireKey`] → `u64` packets. The exact RST count seen by XDP.
pub const MAP_WIRE_COUNTERS: &str = "WIRE_COUNTERS";
/// Per-CPU hash map: [`SendKey`] → `u64`. Every `tcp:tcp_send_reset` hit, exact.
pub const MAP_SEND_COUNTERS: &str = "SEND_COUNTERS";
/// Per-CPU hash map: [`RecvKey`] → `u64`. Every `tcp:tcp_receive_reset` hit, exact.
pub const MAP_RECV_COUNTERS: &str = "RECV_COUNTERS";
/// Per-CPU array of `u64` self-counters indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "STATS";
/// Ring buffer carrying [`WireEvent`], [`SendEvent`] and [`RecvEvent`] samples.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU array with one [`TokenBucket`] for the wire sampler.
pub const MAP_BUCKET: &str = "BUCKET";

pub const PROG_XDP: &str = "rstmon_xdp";
pub const PROG_XDP_NOOP: &str = "rstmon_xdp_noop";
pub const PROG_SEND_RESET: &str = "rstmon_send_reset";
pub const PROG_RECV_RESET: &str = "rstmon_receive_reset";

/// Ring-buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;

// Self-counter indexes in MAP_STATS.
/// Wire samples lost because the ring buffer was full.
pub const STAT_WIRE_RING_FULL: u32 = 0;
/// Wire samples not taken because the token bucket was empty (the counter still counted).
pub const STAT_WIRE_RATE_LIMITED: u32 = 1;
/// Send/receive samples lost because the ring buffer was full.
pub const STAT_TRACE_RING_FULL: u32 = 2;
/// Wire samples submitted to the ring buffer.
pub const STAT_WIRE_SAMPLED: u32 = 3;
/// Trace samples submitted to the ring buffer.
pub const STAT_TRACE_SAMPLED: u32 = 4;
/// Counter-map updates that failed (map full).
pub const STAT_COUNTER_MAP_FULL: u32 = 5;
/// Kernel reads (probe_read) that failed in the tracepoint programs.
pub const STAT_READ_ERRORS: u32 = 6;
pub const STAT_COUNT: u32 = 8;

pub const COUNTER_MAP_ENTRIES: u32 = 4096;

// Event kinds: the first byte of every ring-buffer record.
pub const EVENT_WIRE: u8 = 1;
pub const EVENT_SEND: u8 = 2;
pub const EVENT_RECV: u8 = 3;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// `reason` value when the running kernel's tracepoint has no `reason` field (< 6.10).
pub const REASON_UNAVAILABLE: u32 = u32::MAX;
/// `trig_flags` value when the reset had no triggering segment (an active reset).
pub const NO_TRIGGER: u8 = 0;
/// [`RecvKey::origin`]: nothing tells where the RST came from (the connection did not
/// negotiate TCP timestamps).
pub const ORIGIN_UNKNOWN: u8 = 0;
/// [`RecvKey::origin`]: the RST carried no timestamp on a connection that uses them:
/// the stateless answer of a host without the connection (a bare RST).
pub const ORIGIN_STATELESS: u8 = 1;
/// [`RecvKey::origin`]: the RST carried a timestamp: sent by the peer's socket.
pub const ORIGIN_SOCKET: u8 = 2;

/// Names of the globals that user space sets at load time (`EbpfLoader::override_global`).
pub mod globals {
    /// u32, max wire samples per second per CPU; 0 disables wire sampling.
    pub const WIRE_SAMPLES_PER_SEC: &str = "WIRE_SAMPLES_PER_SEC";
    /// u32: a sample forces a consumer wakeup each time the bytes sampled (wire: per
    /// CPU; trace: pending in the ring) cross another multiple of it; never otherwise.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// [`crate::TraceOffsets`].
    pub const TRACE_OFFSETS: &str = "TRACE_OFFSETS";
}

/// Key of the exact wire counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireKey {
    pub ifindex: u32,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// 1 when the RST also carried ACK.
    pub ack: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<WireKey>() == 8);

/// Key of the exact sender-side counters: everything the classifier needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SendKey {
    /// Kernel `enum sk_rst_reason` value, or [`REASON_UNAVAILABLE`].
    pub reason: u32,
    /// Socket state (`TCP_*` numbering), 0 when there was no socket.
    pub state: u8,
    pub family: u8,
    /// TCP flags of the triggering segment, [`NO_TRIGGER`] for an active reset.
    pub trig_flags: u8,
    /// [`SEND_LINGER0`] | [`SEND_TRIG_DATA`].
    pub bits: u8,
}

/// [`SendKey::bits`]: the socket had SO_LINGER on with a zero timeout.
pub const SEND_LINGER0: u8 = 1;
/// [`SendKey::bits`]: the triggering segment carried payload.
pub const SEND_TRIG_DATA: u8 = 2;
const _: () = assert!(size_of::<SendKey>() == 8);

/// Key of the exact receiver-side counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecvKey {
    /// Socket state when it accepted the RST.
    pub state: u8,
    pub family: u8,
    /// [`ORIGIN_UNKNOWN`], [`ORIGIN_STATELESS`] or [`ORIGIN_SOCKET`], from whether the
    /// RST carried a TCP timestamp (`tp->rx_opt.saw_tstamp`, set for the segment being
    /// processed) on a connection that negotiated them (`tstamp_ok`).
    pub origin: u8,
    pub _pad: [u8; 5],
}
const _: () = assert!(size_of::<RecvKey>() == 8);

/// Per-CPU token bucket of the wire sampler.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenBucket {
    pub last_ns: u64,
    pub tokens: u64,
}
const _: () = assert!(size_of::<TokenBucket>() == 16);

/// An RST segment seen on the wire by XDP.
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
    pub _pad: [u8; 4],
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

/// Tracepoint-record and kernel-struct offsets, read from the running kernel at
/// start-up (tracefs format files and BTF) because Rust eBPF gets no CO-RE.
/// A value of [`OFF_NONE`] means "not available on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOffsets {
    // tcp:tcp_send_reset record
    pub sr_skbaddr: u16,
    pub sr_skaddr: u16,
    pub sr_state: u16,
    pub sr_reason: u16,
    /// 1: `saddr`/`daddr` are 28-byte sockaddr_in/in6 (6.10+);
    /// 0: split fields sport/dport/family/saddr/daddr/saddr_v6/daddr_v6 (6.1).
    pub sr_sockaddr: u16,
    pub sr_saddr: u16,
    pub sr_daddr: u16,
    pub sr_sport: u16,
    pub sr_dport: u16,
    pub sr_family: u16,
    pub sr_saddr_v6: u16,
    pub sr_daddr_v6: u16,
    // tcp:tcp_receive_reset record (split layout on every supported kernel)
    pub rr_skaddr: u16,
    pub rr_sport: u16,
    pub rr_dport: u16,
    pub rr_family: u16,
    pub rr_saddr: u16,
    pub rr_daddr: u16,
    pub rr_saddr_v6: u16,
    pub rr_daddr_v6: u16,
    // struct sock / struct sk_buff (BTF)
    pub sk_state: u16,
    pub sk_flags: u16,
    pub sk_lingertime: u16,
    pub skb_head: u16,
    pub skb_data: u16,
    pub skb_len: u16,
    pub skb_transport_header: u16,
    /// Bit number of SOCK_LINGER in `sk_flags`.
    pub sock_linger_bit: u16,
    /// Absolute bit offsets in `struct tcp_sock` of `rx_opt.saw_tstamp` and
    /// `rx_opt.tstamp_ok`.
    pub tp_saw_tstamp_bit: u16,
    pub tp_tstamp_ok_bit: u16,
}
const _: () = assert!(size_of::<TraceOffsets>() == 60);

pub const OFF_NONE: u16 = u16::MAX;

impl TraceOffsets {
    pub const NONE: Self = Self {
        sr_skbaddr: OFF_NONE,
        sr_skaddr: OFF_NONE,
        sr_state: OFF_NONE,
        sr_reason: OFF_NONE,
        sr_sockaddr: 0,
        sr_saddr: OFF_NONE,
        sr_daddr: OFF_NONE,
        sr_sport: OFF_NONE,
        sr_dport: OFF_NONE,
        sr_family: OFF_NONE,
        sr_saddr_v6: OFF_NONE,
        sr_daddr_v6: OFF_NONE,
        rr_skaddr: OFF_NONE,
        rr_sport: OFF_NONE,
        rr_dport: OFF_NONE,
        rr_family: OFF_NONE,
        rr_saddr: OFF_NONE,
        rr_daddr: OFF_NONE,
        rr_saddr_v6: OFF_NONE,
        rr_daddr_v6: OFF_NONE,
        sk_state: OFF_NONE,
        sk_flags: OFF_NONE,
        sk_lingertime: OFF_NONE,
        skb_head: OFF_NONE,
        skb_data: OFF_NONE,
        skb_len: OFF_NONE,
        skb_transport_header: OFF_NONE,
        sock_linger_bit: OFF_NONE,
        tp_saw_tstamp_bit: OFF_NONE,
        tp_tstamp_ok_bit: OFF_NONE,
    };
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), only integer fields, explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for WireKey {}
    // SAFETY: repr(C), only integer fields, no implicit padding.
    unsafe impl aya::Pod for SendKey {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for RecvKey {}
    // SAFETY: repr(C), two u64 fields.
    unsafe impl aya::Pod for TokenBucket {}
    // SAFETY: repr(C), only u16 fields, no padding.
    unsafe impl aya::Pod for TraceOffsets {}
}
