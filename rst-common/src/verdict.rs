//! What the verdict join and the forged-reset signals share between the kernel
//! programs and the daemon: the counter key, the verdict record, the per-CPU marks and
//! the offsets they read.
//!
//! XDP marks each ingress RST in a small per-CPU ring ([`MarkRing`]): only what the join
//! needs, written with word stores. The stack's processing of the same frame, on the
//! same CPU in the same softirq, consumes the mark: `tcp:tcp_receive_reset` (accepted)
//! or `skb:kfree_skb` with drop reason `TCP_RESET` (challenged). Every other ingress RST
//! is `ignored`, derived per interface from the exact wire counts. See
//! docs/classification.md.

use core::mem::size_of;

/// Record kind of a [`VerdictEvent`] (after `EVENT_WIRE`, `EVENT_SEND`, `EVENT_RECV`).
pub const EVENT_VERDICT: u8 = 4;

// Verdicts ([`CounterKey::value`] when [`CounterKey::kind`] is [`KIND_VERDICT`]).
/// A socket took the RST (`tcp:tcp_receive_reset` for the same connection).
pub const VERDICT_ACCEPTED: u8 = 0;
/// In window but not exact: the kernel answered with a challenge ACK (RFC 5961).
pub const VERDICT_CHALLENGED: u8 = 1;
/// Neither: out of window, no connection for it, not for this host. Never counted in
/// the kernel; the daemon derives it (ingress RSTs − accepted − challenged).
pub const VERDICT_IGNORED: u8 = 2;

// Forged-reset signals: bits of [`VerdictEvent::suspect`], and [`CounterKey::value`]
// when [`CounterKey::kind`] is [`KIND_SIGNAL`].
/// The RST's TTL/hop limit differs from the one the peer's SYN or SYN-ACK had.
pub const SIGNAL_TTL: u8 = 0;
/// The real peer sent another segment on the connection after an accepted RST (it found
/// no socket: `kfree_skb` with drop reason `NO_SOCKET`).
pub const SIGNAL_ALIVE_AFTER_RESET: u8 = 1;
/// Several RSTs with different sequence numbers for one connection within
/// [`SPRAY_WINDOW_NS`].
pub const SIGNAL_SEQ_SPRAY: u8 = 2;

pub const KIND_VERDICT: u8 = 0;
pub const KIND_SIGNAL: u8 = 1;

/// Marks per CPU (a power of two). The stack processes received frames in batches of
/// `gro_normal_batch` (8 by default) after XDP has run on each of them.
pub const MARKS: u32 = 8;
/// `seq_spray`: RSTs of one connection with different sequence numbers within this.
pub const SPRAY_WINDOW_NS: u64 = 1_000_000_000;
/// `seq_spray`: this many distinct sequence numbers within the window.
pub const SPRAY_THRESHOLD: u32 = 4;
/// `alive_after_reset`: a segment for no socket on a tuple within this of its accepted RST.
pub const ALIVE_WINDOW_NS: u64 = 60_000_000_000;
/// Entries of the LRU maps of the signals.
pub const SIGNAL_LRU_ENTRIES: u32 = 65_536;
/// Entries of `VERDICT_COUNTERS`.
pub const VERDICT_COUNTER_ENTRIES: u32 = 1 << 14;

/// Key of the verdict and signal counters (`VERDICT_COUNTERS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub ifindex: u32,
    pub family: u8,
    /// [`KIND_VERDICT`] or [`KIND_SIGNAL`].
    pub kind: u8,
    /// A `VERDICT_*` or `SIGNAL_*` value.
    pub value: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<CounterKey>() == 8);

/// XOR of the 32-bit words (memory order) of both addresses: symmetric, so the socket's
/// view (local first) and the frame's (remote first) fold alike, and a v4-mapped IPv6
/// pair folds like the IPv4 pair. IPv4 addresses use the first 4 bytes.
pub fn addr_fold(a: &[u8; 16], b: &[u8; 16]) -> u32 {
    let w = |x: &[u8; 16], i: usize| u32::from_ne_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
    w(a, 0) ^ w(a, 4) ^ w(a, 8) ^ w(a, 12) ^ w(b, 0) ^ w(b, 4) ^ w(b, 8) ^ w(b, 12)
}

/// A connection's ports as the join keys them: remote << 16 | local.
pub const fn ports_key(remote: u16, local: u16) -> u32 {
    ((remote as u32) << 16) | local as u32
}

/// A pending mark: what the join matches an ingress RST by, and what its verdict needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mark {
    /// [`addr_fold`] of the RST's addresses.
    pub fold: u32,
    /// [`ports_key`]`(sport, dport)` of the RST.
    pub ports: u32,
    /// The RST's sequence number (host order).
    pub seq: u32,
    pub ifindex: u32,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub family: u8,
    /// 1 when the wire sample of this RST was taken (its verdict is then sampled too).
    pub sampled: u8,
    /// 1 until consumed.
    pub live: u8,
}
const _: () = assert!(size_of::<Mark>() == 20);

/// One CPU's marks.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MarkRing {
    /// Marks written so far (the next slot is `next % MARKS`).
    pub next: u32,
    pub marks: [Mark; MARKS as usize],
}
const _: () = assert!(size_of::<MarkRing>() == 4 + 20 * MARKS as usize);

/// A connection as the signals key it: the remote end first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub fold: u32,
    /// Remote port << 16 | local port.
    pub ports: u32,
    pub family: u8,
    // Scalar padding: an array would be zeroed by a memset call in the kernel programs.
    pub _pad0: u8,
    pub _pad1: u16,
}
const _: () = assert!(size_of::<ConnKey>() == 12);

/// `seq_spray` state of one connection.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SprayState {
    pub first_ns: u64,
    pub last_seq: u32,
    /// Distinct sequence numbers seen since `first_ns`.
    pub distinct: u32,
}
const _: () = assert!(size_of::<SprayState>() == 16);

/// An accepted RST, remembered for `alive_after_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// When it was accepted.
    pub ts_ns: u64,
    pub ifindex: u32,
    pub seq: u32,
    pub ttl: u8,
    pub peer_ttl: u8,
    /// 1 once the signal was raised (it is raised once per accepted RST).
    pub flagged: u8,
    pub _pad0: u8,
    pub _pad1: u32,
}
const _: () = assert!(size_of::<Accepted>() == 24);

/// The verdict of an ingress RST: for every accepted one, for a challenged one whose
/// wire sample was taken, and once more for an accepted one when `alive_after_reset`
/// is raised later (`late` = 1). Matched to the wire sample by `fold`, `ports`, `seq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictEvent {
    /// [`EVENT_VERDICT`].
    pub kind: u8,
    pub verdict: u8,
    /// Bit `1 << SIGNAL_*` per signal.
    pub suspect: u8,
    pub family: u8,
    /// The RST's TTL/hop limit.
    pub ttl: u8,
    /// The TTL/hop limit learned from the peer's handshake, 0 when none was.
    pub peer_ttl: u8,
    /// 1 when the wire sample of this RST was taken.
    pub sampled: u8,
    /// 1 for a signal raised after the verdict (`alive_after_reset`).
    pub late: u8,
    pub ifindex: u32,
    pub fold: u32,
    pub ports: u32,
    pub seq: u32,
    /// `bpf_ktime_get_ns()` when the verdict was made.
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<VerdictEvent>() == 32);

/// What the verdict programs need of the running kernel, from BTF at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictOffsets {
    /// Arguments of `kfree_skb` (`skb, location[, reason[, rx_sk]]`): the program is
    /// attached only with 3 or more; `rx_sk` is read only with 4.
    pub kfree_args: u16,
    pub _pad: u16,
    /// `enum skb_drop_reason` value of `SKB_DROP_REASON_TCP_RESET` (an RST answered
    /// with a challenge ACK, or dropped by a listener), `u32::MAX` when BTF has none.
    pub reason_tcp_reset: u32,
    /// `SKB_DROP_REASON_NO_SOCKET`, `u32::MAX` when BTF has none.
    pub reason_no_socket: u32,
    pub _pad1: u32,
}
const _: () = assert!(size_of::<VerdictOffsets>() == 16);

impl VerdictOffsets {
    pub const NONE: Self = Self {
        kfree_args: 0,
        _pad: 0,
        reason_tcp_reset: u32::MAX,
        reason_no_socket: u32::MAX,
        _pad1: 0,
    };
}

/// Map and program names.
pub const MAP_VERDICT_COUNTERS: &str = "VERDICT_COUNTERS";
pub const PROG_KFREE_SKB: &str = "rstmon_kfree_skb";
/// The global holding [`VerdictOffsets`].
pub const GLOBAL_VERDICT_OFFSETS: &str = "VERDICT_OFFSETS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_symmetric_and_v4_mapped_folds_like_v4() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(addr_fold(&a, &b), addr_fold(&b, &a));
        let mapped = |x: [u8; 4]| {
            let mut m = [0u8; 16];
            m[10] = 0xff;
            m[11] = 0xff;
            m[12..].copy_from_slice(&x);
            m
        };
        assert_eq!(
            addr_fold(&mapped([10, 0, 0, 1]), &mapped([10, 0, 0, 2])),
            addr_fold(&a, &b)
        );
        assert_eq!(ports_key(80, 40000), (80 << 16) | 40000);
    }
}
