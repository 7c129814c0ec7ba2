//! Offsets into tracepoint records and kernel structs, found at start-up.

use core::mem::size_of;

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
