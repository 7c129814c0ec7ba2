//! Keys of the exact counter maps, and the sampler's per-CPU state. Each is `#[repr(C)]`
//! with explicit padding, no `bool`, and a size assertion.

use core::mem::size_of;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

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

/// Key of the exact wire counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireKey {
    pub ifindex: u32,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// 1 when the RST also carried ACK.
    pub ack: u8,
    /// [`crate::DIR_INGRESS`] or [`crate::DIR_EGRESS`].
    pub direction: u8,
    pub _pad: u8,
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

/// Key of `PENDING_RESETS`: an RST as it will leave, its addresses and ports local
/// (source) first. IPv4 addresses (v4-mapped ones included) sit in the low 4 bytes of
/// `saddr0`/`daddr0` (memory order), the rest zero; an IPv6 address fills both words.
/// Scalar fields only, so that building one on the eBPF stack never calls memset.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingKey {
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    pub _pad0: u8,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub _pad1: u16,
    pub saddr0: u64,
    pub saddr1: u64,
    pub daddr0: u64,
    pub daddr1: u64,
}
const _: () = assert!(size_of::<PendingKey>() == 40);

/// Value of `PENDING_RESETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingReset {
    /// Announced and not yet seen leaving.
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the last announcement.
    pub ts_ns: u64,
}
const _: () = assert!(size_of::<PendingReset>() == 16);

/// The wire sampler's window, shared by every CPU: samples taken in the current second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleWindow {
    /// The second (coarse monotonic clock / 10^9) the count is for.
    pub second: u64,
    /// Samples taken in that second (may overshoot the rate by the CPUs racing at once).
    pub count: u64,
}
const _: () = assert!(size_of::<SampleWindow>() == 16);

/// [`WorkloadKey::side`] values.
pub const SIDE_SENT: u8 = 0;
pub const SIDE_RECEIVED: u8 = 1;

/// Key of the exact per-workload counters: who (cgroup, namespace), which side, and
/// the side's own counter key ([`SendKey`] or [`RecvKey`], its 8 bytes as a `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// cgroup v2 id, 0 when the reset has no socket that names one.
    pub cgroup_id: u64,
    /// Network namespace inode, 0 when unknown.
    pub netns: u32,
    /// [`SIDE_SENT`] or [`SIDE_RECEIVED`].
    pub side: u8,
    pub _pad: [u8; 3],
    /// The [`SendKey`]/[`RecvKey`] bytes.
    pub key: u64,
}
const _: () = assert!(size_of::<WorkloadKey>() == 24);

/// A key's 8 bytes as a `u64` (and back): [`WorkloadKey::key`].
pub const fn send_key_bits(k: SendKey) -> u64 {
    // SAFETY: both are 8 bytes of plain integers.
    unsafe { core::mem::transmute::<SendKey, u64>(k) }
}
pub const fn recv_key_bits(k: RecvKey) -> u64 {
    // SAFETY: both are 8 bytes of plain integers.
    unsafe { core::mem::transmute::<RecvKey, u64>(k) }
}
pub const fn send_key_of(bits: u64) -> SendKey {
    // SAFETY: any 8 bytes are a valid SendKey.
    unsafe { core::mem::transmute::<u64, SendKey>(bits) }
}
pub const fn recv_key_of(bits: u64) -> RecvKey {
    // SAFETY: any 8 bytes are a valid RecvKey.
    unsafe { core::mem::transmute::<u64, RecvKey>(bits) }
}

/// The connection a socket was opened by: recorded by the `inet_sock_set_state`
/// program when a socket enters SYN_SENT (in the connect() caller) or SYN_RECV (a
/// child of a listener), keyed by the socket's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStart {
    /// `bpf_ktime_get_ns()` when it entered SYN_SENT/SYN_RECV.
    pub start_ns: u64,
    pub pid: u32,
    /// [`crate::PID_CONNECT`], [`crate::PID_LISTEN`] or [`crate::PID_NONE`].
    pub pid_source: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<ConnStart>() == 32);

/// Key of a listener: (network namespace, local port, address family).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns: u32,
    /// Host order (`skc_num`).
    pub port: u16,
    /// AF_INET or AF_INET6.
    pub family: u16,
}
const _: () = assert!(size_of::<ListenKey>() == 8);

/// The task that called listen() on the one socket listening at a [`ListenKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenInfo {
    /// The listening socket.
    pub sk: u64,
    pub pid: u32,
    /// Sockets listening at this key (SO_REUSEPORT allows more than one).
    pub listeners: u32,
    /// 1 once two sockets listened at this key at the same time: which one accepted a
    /// child is then not known, and no process is named until none listens.
    pub ambiguous: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(size_of::<ListenInfo>() == 40);

/// Buckets of the reset histograms, upper bounds in milliseconds (an implicit +Inf
/// bucket follows). Idle: middlebox idle timeouts (350 s is a well-known NAT one).
pub const IDLE_BOUNDS_MS: [u64; HIST_BOUNDS] = [
    100, 1_000, 5_000, 15_000, 30_000, 60_000, 120_000, 300_000, 350_000, 600_000, 900_000,
    1_800_000, 3_600_000,
];
/// Connection age: from a refused-on-arrival request to a day-old connection.
pub const AGE_BOUNDS_MS: [u64; HIST_BOUNDS] = [
    10,
    100,
    1_000,
    10_000,
    60_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    86_400_000,
    604_800_000,
];
pub const HIST_BOUNDS: usize = 13;
/// Slots per histogram in `HISTOGRAMS`: the buckets, +Inf, the sum in milliseconds and
/// one unused.
pub const HIST_SLOTS: u32 = 16;
/// Index of the sum within a histogram's slots.
pub const HIST_SUM: u32 = HIST_BOUNDS as u32 + 1;
/// [`hist_index`] `kind` values.
pub const HIST_IDLE: u32 = 0;
pub const HIST_AGE: u32 = 1;

/// Index of slot `slot` of histogram (`kind`, `side`) in `HISTOGRAMS`.
#[inline(always)]
pub const fn hist_index(kind: u32, side: u8, slot: u32) -> u32 {
    ((kind & 1) * 2 + (side as u32 & 1)) * HIST_SLOTS + slot
}
