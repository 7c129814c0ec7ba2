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
    /// Who owns the socket (or, without one, the namespace the trigger arrived in).
    pub attr: Attribution,
    /// The connection's state at the reset, read from `tcp_sock` (full sockets only).
    pub conn: ConnInfo,
}

/// [`Attribution::pid_source`]: no process is known exactly.
pub const PID_NONE: u8 = 0;
/// The task that made the reset in a system call (close(), disconnect, `ss -K`): the
/// reset ran while that task held the socket lock (`sk_lock.owned`).
pub const PID_RESET: u8 = 1;
/// The task that called connect() (recorded when the socket entered SYN_SENT).
pub const PID_CONNECT: u8 = 2;
/// The task that called listen() on the listener this socket was accepted from.
pub const PID_LISTEN: u8 = 3;

/// [`Attribution::uid`] when it is not known.
pub const UID_NONE: u32 = u32::MAX;

/// Who a reset belongs to, read from the socket itself (never from `current` in
/// softirq).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// cgroup v2 id (kernfs id = inode number of the cgroup directory), 0 when unknown.
    pub cgroup_id: u64,
    /// Network namespace inode number, 0 when unknown.
    pub netns: u32,
    /// Socket owner (`sk_uid`), [`UID_NONE`] when unknown.
    pub uid: u32,
    /// Process id (tgid), meaningful when `pid_source` is not [`PID_NONE`].
    pub pid: u32,
    /// [`PID_NONE`], [`PID_RESET`], [`PID_CONNECT`] or [`PID_LISTEN`].
    pub pid_source: u8,
    pub _pad: [u8; 3],
    /// The process's `comm`, NUL-padded.
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<Attribution>() == 40);

/// [`ConnInfo::age_ns`] when the connection's start is not known.
pub const AGE_UNKNOWN: u64 = u64::MAX;

/// Per-connection context read from `tcp_sock` at the reset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    pub bytes_received: u64,
    pub bytes_acked: u64,
    /// Since the socket entered SYN_SENT or SYN_RECV, [`AGE_UNKNOWN`] if not tracked.
    pub age_ns: u64,
    pub segs_in: u32,
    pub segs_out: u32,
    /// `rcv_nxt - copied_seq`: received, not read by the application.
    pub unread: u32,
    /// `write_seq - snd_nxt`: written by the application, not yet sent.
    pub unsent: u32,
    /// `snd_nxt - snd_una`: sent, not yet acknowledged.
    pub unacked: u32,
    /// Smoothed RTT in microseconds (`srtt_us >> 3`).
    pub srtt_us: u32,
    pub retrans: u32,
    /// Milliseconds since the last segment received (as keepalive measures it: the
    /// later of `icsk_ack.lrcvtime` and `rcv_tstamp`) and since the last data sent
    /// (`lsndtime`).
    pub idle_rx_ms: u32,
    pub idle_tx_ms: u32,
    /// 1 when the fields above were read (a full, synchronized socket), else 0.
    pub valid: u32,
}
const _: () = assert!(size_of::<ConnInfo>() == 64);

/// `tcp:tcp_send_reset` sample.
pub type SendEvent = TraceEvent<SendKey>;
/// `tcp:tcp_receive_reset` sample.
pub type RecvEvent = TraceEvent<RecvKey>;
const _: () = assert!(size_of::<SendEvent>() == 168);
const _: () = assert!(size_of::<RecvEvent>() == 168);
