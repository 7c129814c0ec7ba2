//! Kernel-struct offsets and tracepoint arity, found at start-up.

use core::mem::size_of;

/// What the raw-tracepoint programs need to know about the running kernel, read from
/// its BTF at start-up because Rust eBPF gets no CO-RE. The programs read everything
/// with `bpf_probe_read_kernel` at these byte offsets.
///
/// A value of [`OFF_NONE`] means "not available on this kernel". The global is frozen
/// read-only data, so the verifier sees every field as a constant and prunes the
/// branches a kernel does not take (e.g. reading the third argument of
/// `tcp_send_reset` where it has two).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOffsets {
    /// Arguments of the `tcp_send_reset` tracepoint: 3 (`sk`, `skb`, `reason`) on
    /// 6.10+, 2 (`sk`, `skb`) before. Only 3 makes the program read the reason.
    pub send_reset_args: u16,
    // struct sock (struct sock_common at its start), struct inet_sock (struct sock at
    // its start): what the tracepoint records take, `inet->inet_sport` and
    // `inet->inet_saddr` included. Not `skc_num`: tcp_set_state(TCP_CLOSE) zeroes it
    // (inet_put_port) before an active reset is sent.
    /// `__sk_common.skc_state` (u8).
    pub sk_state: u16,
    /// `__sk_common.skc_family` (u16).
    pub sk_family: u16,
    /// `inet_sock.inet_sport` (u16, local port, network order).
    pub inet_sport: u16,
    /// `__sk_common.skc_dport` (`inet_dport`; u16, remote port, network order).
    pub sk_dport: u16,
    /// `inet_sock.inet_saddr` (IPv4 local address).
    pub inet_saddr: u16,
    /// `__sk_common.skc_daddr` (`inet_daddr`; IPv4 remote address).
    pub sk_daddr: u16,
    /// `__sk_common.skc_v6_rcv_saddr` (IPv6 local address).
    pub sk_v6_rcv_saddr: u16,
    /// `__sk_common.skc_v6_daddr` (IPv6 remote address).
    pub sk_v6_daddr: u16,
    /// `sk_flags` (`__sk_common.skc_flags` on recent kernels), unsigned long.
    pub sk_flags: u16,
    /// `sk_lingertime` (`__sk_common.skc_lingertime` on recent kernels), long.
    pub sk_lingertime: u16,
    // struct sk_buff
    pub skb_head: u16,
    pub skb_data: u16,
    pub skb_len: u16,
    pub skb_network_header: u16,
    pub skb_transport_header: u16,
    /// Bit number of SOCK_LINGER in `sk_flags`.
    pub sock_linger_bit: u16,
    /// Absolute bit offsets in `struct tcp_sock` of `rx_opt.saw_tstamp` and
    /// `rx_opt.tstamp_ok`.
    pub tp_saw_tstamp_bit: u16,
    pub tp_tstamp_ok_bit: u16,
    pub _pad: u16,
}
const _: () = assert!(size_of::<TraceOffsets>() == 40);

pub const OFF_NONE: u16 = u16::MAX;

impl TraceOffsets {
    pub const NONE: Self = Self {
        send_reset_args: 0,
        sk_state: OFF_NONE,
        sk_family: OFF_NONE,
        inet_sport: OFF_NONE,
        sk_dport: OFF_NONE,
        inet_saddr: OFF_NONE,
        sk_daddr: OFF_NONE,
        sk_v6_rcv_saddr: OFF_NONE,
        sk_v6_daddr: OFF_NONE,
        sk_flags: OFF_NONE,
        sk_lingertime: OFF_NONE,
        skb_head: OFF_NONE,
        skb_data: OFF_NONE,
        skb_len: OFF_NONE,
        skb_network_header: OFF_NONE,
        skb_transport_header: OFF_NONE,
        sock_linger_bit: OFF_NONE,
        tp_saw_tstamp_bit: OFF_NONE,
        tp_tstamp_ok_bit: OFF_NONE,
        _pad: 0,
    };
}
