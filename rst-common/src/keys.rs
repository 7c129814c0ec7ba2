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
