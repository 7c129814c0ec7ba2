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
    // Attribution (struct sock, struct cgroup, struct kernfs_node, struct net).
    /// `sk_cgrp_data.cgroup` (struct cgroup *, cgroup v2).
    pub sk_cgrp_cgroup: u16,
    /// `cgroup.kn` (struct kernfs_node *).
    pub cgroup_kn: u16,
    /// `kernfs_node.id` (u64).
    pub kn_id: u16,
    /// `sk_uid.val` (u32).
    pub sk_uid: u16,
    /// `__sk_common.skc_net.net` (struct net *): also valid in time-wait and request
    /// mini-sockets.
    pub sk_net: u16,
    /// `net.ns.inum` (u32).
    pub net_ns_inum: u16,
    /// `sk_protocol` (u16).
    pub sk_protocol: u16,
    /// `sk_lock.owned` (int): set while a task holds the socket lock.
    pub sk_lock_owned: u16,
    /// `__sk_common.skc_num` (u16, local port, host order).
    pub sk_num: u16,
    /// `__sk_common.skc_listener` (a request socket's listener).
    pub sk_listener: u16,
    /// `sk_buff.dev` (struct net_device *).
    pub skb_dev: u16,
    /// `net_device.nd_net.net` (struct net *).
    pub dev_nd_net: u16,
    // struct tcp_sock (struct inet_connection_sock at its start).
    pub tp_bytes_received: u16,
    pub tp_bytes_acked: u16,
    pub tp_segs_in: u16,
    pub tp_segs_out: u16,
    pub tp_rcv_nxt: u16,
    pub tp_copied_seq: u16,
    pub tp_write_seq: u16,
    pub tp_snd_nxt: u16,
    pub tp_snd_una: u16,
    pub tp_srtt_us: u16,
    pub tp_total_retrans: u16,
    pub tp_rcv_tstamp: u16,
    pub tp_lsndtime: u16,
    /// `inet_connection_sock.icsk_ack.lrcvtime`.
    pub icsk_lrcvtime: u16,
    /// The kernel's CONFIG_HZ (jiffies per second), 0 when unknown (no idle times).
    pub hz: u16,
    /// The span of `sk_buff` that holds `len`, the two header offsets, `head` and
    /// `data`, read in one `bpf_probe_read_kernel` instead of five: its first byte, or
    /// [`OFF_NONE`] when those fields span more than [`SKB_WINDOW_MAX`] bytes (then
    /// each is read on its own).
    pub skb_win: u16,
    /// Its length in bytes (≤ [`SKB_WINDOW_MAX`]).
    pub skb_win_len: u16,
    /// The span of `tcp_sock` that holds the most of the connection context's fields
    /// within [`TCP_WINDOW_MAX`] bytes ([`best_window`]), read in one
    /// `bpf_probe_read_kernel`; a field outside it is read on its own. [`OFF_NONE`]:
    /// every field on its own.
    pub tp_win: u16,
    pub tp_win_len: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(size_of::<TraceOffsets>() == 104);

pub const OFF_NONE: u16 = u16::MAX;

/// The most bytes of `sk_buff` read as one window ([`TraceOffsets::skb_win`]).
pub const SKB_WINDOW_MAX: u16 = 128;

/// The most bytes of `tcp_sock` read as one window ([`TraceOffsets::tp_win`]).
pub const TCP_WINDOW_MAX: u16 = 512;

/// The span of at most `max` bytes that holds the most of `fields` (offset, size in
/// bytes; [`OFF_NONE`] ones left out), the lowest one on a tie: its first byte and
/// length, or `None` when it would hold fewer than two (one read each is as cheap).
pub fn best_window(fields: &[(u16, u16)], max: u16) -> Option<(u16, u16)> {
    let mut best: Option<(usize, u16, u16)> = None;
    for &(lo, _) in fields.iter().filter(|(o, _)| *o != OFF_NONE) {
        let inside = |(o, n): &&(u16, u16)| {
            *o != OFF_NONE && *o >= lo && o.saturating_add(*n) <= lo.saturating_add(max)
        };
        let count = fields.iter().filter(inside).count();
        let hi = fields
            .iter()
            .filter(inside)
            .map(|(o, n)| o + n)
            .max()
            .unwrap_or(lo);
        let better = match best {
            None => true,
            Some((c, blo, _)) => count > c || (count == c && lo < blo),
        };
        if better {
            best = Some((count, lo, hi - lo));
        }
    }
    best.filter(|(count, _, _)| *count >= 2)
        .map(|(_, lo, len)| (lo, len))
}

/// The window of `fields` (offset, size in bytes): its first byte and length, or `None`
/// when a field is missing ([`OFF_NONE`]) or they span more than [`SKB_WINDOW_MAX`].
pub fn window(fields: &[(u16, u16)]) -> Option<(u16, u16)> {
    let mut lo = u16::MAX;
    let mut hi = 0u16;
    for &(off, size) in fields {
        if off == OFF_NONE {
            return None;
        }
        lo = lo.min(off);
        hi = hi.max(off.checked_add(size)?);
    }
    let len = hi.checked_sub(lo)?;
    (len > 0 && len <= SKB_WINDOW_MAX).then_some((lo, len))
}

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
        sk_cgrp_cgroup: OFF_NONE,
        cgroup_kn: OFF_NONE,
        kn_id: OFF_NONE,
        sk_uid: OFF_NONE,
        sk_net: OFF_NONE,
        net_ns_inum: OFF_NONE,
        sk_protocol: OFF_NONE,
        sk_lock_owned: OFF_NONE,
        sk_num: OFF_NONE,
        sk_listener: OFF_NONE,
        skb_dev: OFF_NONE,
        dev_nd_net: OFF_NONE,
        tp_bytes_received: OFF_NONE,
        tp_bytes_acked: OFF_NONE,
        tp_segs_in: OFF_NONE,
        tp_segs_out: OFF_NONE,
        tp_rcv_nxt: OFF_NONE,
        tp_copied_seq: OFF_NONE,
        tp_write_seq: OFF_NONE,
        tp_snd_nxt: OFF_NONE,
        tp_snd_una: OFF_NONE,
        tp_srtt_us: OFF_NONE,
        tp_total_retrans: OFF_NONE,
        tp_rcv_tstamp: OFF_NONE,
        tp_lsndtime: OFF_NONE,
        icsk_lrcvtime: OFF_NONE,
        hz: 0,
        skb_win: OFF_NONE,
        skb_win_len: 0,
        tp_win: OFF_NONE,
        tp_win_len: 0,
        _pad: [0; 2],
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_windows() {
        // tcp_sock and icsk_ack.lrcvtime on 6.18.
        let tp = [
            (1752, 8),
            (1824, 8),
            (1760, 4),
            (1536, 4),
            (1664, 4),
            (1464, 4),
            (1576, 4),
            (1668, 4),
            (1672, 4),
            (1680, 4),
            (2200, 4),
            (1724, 4),
            (1584, 4),
            (1264, 4),
        ];
        // Twelve of the fourteen either way: 1264..1764 (lrcvtime and the first eleven
        // but one) or 1464..1832; the lower on a tie.
        assert_eq!(best_window(&tp, 512), Some((1264, 500)));
        assert_eq!(best_window(&tp, 1024), Some((1264, 940)));
        assert_eq!(best_window(&[(8, 4), (OFF_NONE, 4), (600, 4)], 512), None);
        assert_eq!(
            best_window(&[(8, 4), (12, 4), (600, 4), (604, 4)], 512),
            Some((8, 8))
        );
        assert_eq!(best_window(&[], 512), None);
    }

    #[test]
    fn windows() {
        assert_eq!(window(&[(112, 4), (178, 2), (200, 8)]), Some((112, 96)));
        assert_eq!(window(&[(8, 8)]), Some((8, 8)));
        assert_eq!(window(&[(0, 4), (200, 8)]), None, "208 bytes > 128");
        assert_eq!(window(&[(0, 4), (120, 8)]), Some((0, 128)));
        assert_eq!(window(&[(0, 4), (OFF_NONE, 2)]), None);
        assert_eq!(window(&[]), None);
    }
}
