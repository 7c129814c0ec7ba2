//! Names of the maps, programs and load-time globals, used by both sides, and the sizes
//! of the maps.

/// Per-CPU hash map: [`crate::WireKey`] → `u64` packets. The exact RST count seen by XDP.
pub const MAP_WIRE_COUNTERS: &str = "WIRE_COUNTERS";
/// Per-CPU hash map: [`crate::SendKey`] → `u64`. Every `tcp:tcp_send_reset` hit, exact.
pub const MAP_SEND_COUNTERS: &str = "SEND_COUNTERS";
/// Per-CPU hash map: [`crate::RecvKey`] → `u64`. Every `tcp:tcp_receive_reset` hit, exact.
pub const MAP_RECV_COUNTERS: &str = "RECV_COUNTERS";
/// Per-CPU array of `u64` self-counters indexed by [`crate::stats::Stat`].
pub const MAP_STATS: &str = "STATS";
/// Ring buffer carrying [`crate::WireEvent`], [`crate::SendEvent`] and [`crate::RecvEvent`] samples.
pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU array with one [`crate::TokenBucket`] for the wire sampler.
pub const MAP_BUCKET: &str = "BUCKET";

pub const PROG_XDP: &str = "rstmon_xdp";
pub const PROG_XDP_NOOP: &str = "rstmon_xdp_noop";
pub const PROG_SEND_RESET: &str = "rstmon_send_reset";
pub const PROG_RECV_RESET: &str = "rstmon_receive_reset";

/// Ring-buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;

pub const COUNTER_MAP_ENTRIES: u32 = 4096;

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
