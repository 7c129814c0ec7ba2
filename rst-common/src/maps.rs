//! Names of the maps, programs and load-time globals, used by both sides, and the sizes
//! of the maps.

/// Per-CPU array of [`WireSlot`] indexed by slot: the exact wire RST counts of the
/// interfaces that have one, each counter at [`wire_slot_index`]`(0, …)` of its slot.
/// One entry per interface (not one per counter): a scrape's batched read copies an
/// entry with a fixed cost of its own.
pub const MAP_WIRE_SLOTS: &str = "WIRE_SLOTS";
/// Array of `u32` indexed by ifindex: the interface's slot in `WIRE_SLOTS` plus one, 0
/// for none. Written by the interface controller before it attaches.
pub const MAP_IFINDEX_SLOT: &str = "IFINDEX_SLOT";
/// Per-CPU hash map: [`crate::WireKey`] → `u64` packets. The overflow path: exact counts
/// of interfaces without a slot (more interfaces than slots, or an ifindex beyond
/// [`IFINDEX_SLOT_ENTRIES`]).
pub const MAP_WIRE_COUNTERS: &str = "WIRE_COUNTERS";
/// Per-CPU array of `u64`, [`WIRE_SLOT_COUNTERS`] entries (index as in a slot): RSTs of
/// interfaces that had neither a slot nor room in `WIRE_COUNTERS`. Still exact in total.
pub const MAP_WIRE_UNATTRIBUTED: &str = "WIRE_UNATTRIBUTED";
/// Per-CPU hash map: [`crate::SendKey`] → `u64`. Every `tcp:tcp_send_reset` hit, exact.
pub const MAP_SEND_COUNTERS: &str = "SEND_COUNTERS";
/// Per-CPU hash map: [`crate::RecvKey`] → `u64`. Every `tcp:tcp_receive_reset` hit, exact.
pub const MAP_RECV_COUNTERS: &str = "RECV_COUNTERS";
/// Per-CPU hash map: [`crate::WorkloadKey`] → `u64`. Every sent and received reset,
/// exact, by cgroup and network namespace (allocated on use, [`WORKLOAD_MAP_ENTRIES`]).
pub const MAP_WORKLOAD_COUNTERS: &str = "WORKLOAD_COUNTERS";
/// Per-CPU array of `u64`: the idle and age histograms ([`crate::hist_index`]).
pub const MAP_HISTOGRAMS: &str = "HISTOGRAMS";
/// LRU hash map: socket address → [`crate::ConnStart`].
pub const MAP_CONNS: &str = "CONNS";
/// LRU hash map: [`crate::ListenKey`] → [`crate::ListenInfo`].
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Per-CPU array of `u64` self-counters indexed by [`crate::stats::Stat`].
pub const MAP_STATS: &str = "STATS";
/// Ring buffer carrying [`crate::WireEvent`], [`crate::SendEvent`] and [`crate::RecvEvent`] samples.
pub const MAP_EVENTS: &str = "EVENTS";
/// Array with one [`crate::SampleWindow`], shared by every CPU: the wire sampler's rate
/// limit over all CPUs.
pub const MAP_BUCKET: &str = "BUCKET";
/// Per-CPU array of `u64`, [`EGRESS_ORIGIN_COUNTERS`] entries at [`egress_origin_index`]:
/// every RST leaving a monitored interface, by who made it (`EGRESS_*`).
pub const MAP_EGRESS_ORIGINS: &str = "EGRESS_ORIGINS";
/// Per-CPU hash map: [`crate::WireKey`] (direction egress, ack 0) → `u64`: forwarded
/// RSTs per outgoing interface.
pub const MAP_FORWARDED: &str = "FORWARDED";
/// Per-CPU array of `u64`, 2 entries (IPv4, IPv6): forwarded RSTs `FORWARDED` had no room
/// for (still counted, interface unknown).
pub const MAP_FORWARDED_UNATTRIBUTED: &str = "FORWARDED_UNATTRIBUTED";
/// LRU hash map: [`crate::PendingKey`] → [`crate::PendingReset`]. Written by
/// `tcp_send_reset` for every reset the TCP stack is about to send (the RST's own
/// addresses and ports), consumed by the TC egress program when that RST leaves.
pub const MAP_PENDING_RESETS: &str = "PENDING_RESETS";

pub const PROG_XDP: &str = "rstmon_xdp";
pub const PROG_XDP_NOOP: &str = "rstmon_xdp_noop";
pub const PROG_SEND_RESET: &str = "rstmon_send_reset";
pub const PROG_RECV_RESET: &str = "rstmon_receive_reset";
/// The TC egress classifier: counts, attributes and samples every RST that leaves.
pub const PROG_TC: &str = "rstmon_tc";
/// Benchmark baseline: a TC classifier that only returns.
pub const PROG_TC_NOOP: &str = "rstmon_tc_noop";
pub const PROG_SET_STATE: &str = "rstmon_sock_set_state";
/// The TC egress sampler, tail-called by [`PROG_TC`] for each RST it samples (a program
/// of its own, so that older verifiers check the counting and the sampling apart).
pub const PROG_TC_SAMPLE: &str = "rstmon_tc_sample";
/// Program array of one entry: [`PROG_TC_SAMPLE`], which user space puts there before
/// it attaches [`PROG_TC`].
pub const MAP_TC_SAMPLE: &str = "TC_SAMPLE";
/// Array of one `u32`, set to 1 by user space when it loads [`PROG_TC`]: the send
/// handler announces passive resets in [`MAP_PENDING_RESETS`] only from then on.
pub const MAP_EGRESS_ACTIVE: &str = "EGRESS_ACTIVE";
/// Per-CPU array of one `u32`: the origin [`PROG_TC`] found for the RST it hands to
/// [`PROG_TC_SAMPLE`].
pub const MAP_TC_SAMPLE_ORIGIN: &str = "TC_SAMPLE_ORIGIN";

/// Ring-buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 22;

/// Entries of the SEND/RECV counter hash maps (their keys are few: classification keys).
pub const COUNTER_MAP_ENTRIES: u32 = 4096;

/// Entries of `WORKLOAD_COUNTERS`: (cgroup, namespace, side, classification key).
pub const WORKLOAD_MAP_ENTRIES: u32 = 1 << 16;
/// Entries of the connection table `CONNS` (LRU: the oldest are forgotten first).
pub const CONN_TABLE_ENTRIES: u32 = 1 << 16;
/// Entries of `LISTENERS`.
pub const LISTEN_TABLE_ENTRIES: u32 = 1 << 14;
/// Entries of `HISTOGRAMS`: (idle, age) × (sent, received) × slots.
pub const HISTOGRAM_ENTRIES: u32 = 4 * crate::HIST_SLOTS;

/// Default number of interface slots in `WIRE_SLOTS` (the daemon may size it at load).
pub const WIRE_SLOTS_DEFAULT: u32 = 1024;
/// Counters per slot: direction (ingress, egress) × family (IPv4, IPv6) × flags (RST,
/// RST|ACK).
pub const WIRE_SLOT_COUNTERS: u32 = 8;
/// The value of one `WIRE_SLOTS` entry: one interface's counters.
pub type WireSlot = [u64; WIRE_SLOT_COUNTERS as usize];
/// Entries of `IFINDEX_SLOT`: interfaces with a larger ifindex take the overflow path.
pub const IFINDEX_SLOT_ENTRIES: u32 = 1 << 16;
/// Entries of the overflow hash map `WIRE_COUNTERS` (allocated on use).
pub const WIRE_OVERFLOW_ENTRIES: u32 = 1 << 16;

/// [`crate::WireKey::direction`] values.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Entries of `FORWARDED` (allocated on use).
pub const FORWARDED_ENTRIES: u32 = 1 << 16;
/// Entries of `PENDING_RESETS`: resets announced by the tracepoint and not yet seen
/// leaving (many never leave a monitored interface; the LRU drops the oldest).
pub const PENDING_RESETS_ENTRIES: u32 = 4096;
/// How long an announced reset may take to leave (neighbour resolution can hold a packet
/// for up to `mcast_solicit × retrans_time`, 3 s by default).
pub const PENDING_RESET_TTL_NS: u64 = 5_000_000_000;

// Who made an RST seen at egress ([`crate::WireEvent::origin`], `EGRESS_ORIGINS`).
/// Made by this host's TCP stack: announced by `tcp_send_reset`, or an active reset sent
/// by its full TCP socket (the tracepoint fires right after): counted as sent there.
pub const EGRESS_STACK: u8 = 0;
/// Sent by the TCP stack's control socket with no `tcp_send_reset` to match, on a kernel
/// whose tracepoint does not fire for resets without a socket (before 6.10): counted as a
/// sent reset here, its cause from the wire.
pub const EGRESS_STACK_UNTRACED: u8 = 1;
/// Built by netfilter (`nf_send_reset`: REJECT with tcp-reset): no socket.
pub const EGRESS_FIREWALL: u8 = 2;
/// Written by a program through a raw IP or packet socket.
pub const EGRESS_RAW_SOCKET: u8 = 3;
/// Routed or bridged through this host (received on another interface).
pub const EGRESS_FORWARDED: u8 = 4;
/// Sent by a TCP mini-socket (time-wait, request) without a `tcp_send_reset` hit to
/// match (the hook was skipped, or the reset waited longer than [`PENDING_RESET_TTL_NS`]):
/// counted nowhere else.
pub const EGRESS_UNMATCHED: u8 = 5;
/// Number of `EGRESS_*` origins.
pub const EGRESS_ORIGINS: u32 = 6;
/// Entries of `EGRESS_ORIGINS`: origin × family × flags.
pub const EGRESS_ORIGIN_COUNTERS: u32 = EGRESS_ORIGINS * 4;

/// Index of one counter within `EGRESS_ORIGINS`; `v6` and `ack` are 0 or 1.
#[inline(always)]
pub const fn egress_origin_index(origin: u8, v6: u32, ack: u32) -> u32 {
    origin as u32 * 4 + (v6 & 1) * 2 + (ack & 1)
}

/// Index of one counter: within a [`WireSlot`] and `WIRE_UNATTRIBUTED` (`slot` 0), or
/// in the counters of `slot` laid end to end (as user space reads them). `v6` and `ack` are 0 or 1, `direction` a `DIR_*` value.
#[inline(always)]
pub const fn wire_slot_index(slot: u32, direction: u8, v6: u32, ack: u32) -> u32 {
    slot * WIRE_SLOT_COUNTERS + (direction as u32 & 1) * 4 + (v6 & 1) * 2 + (ack & 1)
}

/// Names of the globals that user space sets at load time (`EbpfLoader::override_global`).
pub mod globals {
    /// u32, max wire samples per second over all CPUs; 0 disables wire sampling,
    /// u32::MAX takes every one.
    pub const WIRE_SAMPLES_PER_SEC: &str = "WIRE_SAMPLES_PER_SEC";
    /// u32, max send/receive (tracepoint) samples per second over all CPUs, a limit of
    /// its own; 0 disables them, u32::MAX takes every one.
    pub const TRACE_SAMPLES_PER_SEC: &str = "TRACE_SAMPLES_PER_SEC";
    /// u32: a sample forces a consumer wakeup each time the bytes sampled (wire: per
    /// CPU; trace: pending in the ring) cross another multiple of it; never otherwise.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// [`crate::TraceOffsets`].
    pub const TRACE_OFFSETS: &str = "TRACE_OFFSETS";
    /// u32: 1 (the object's default) makes the wire sampler read the coarse clock
    /// (`bpf_ktime_get_coarse_ns`, 5.11+), 0 the precise one.
    pub const COARSE_CLOCK: &str = "COARSE_CLOCK";
    /// u8, 1 when the kernel's `tcp_send_reset` fires for resets sent without a socket
    /// (Linux 6.10+), 0 before. At 0 the TC egress program counts the control socket's
    /// RSTs that no tracepoint announced as sent resets (`EGRESS_STACK_UNTRACED`); at 1
    /// it never does, so nothing is counted twice.
    pub const SEND_RESET_NO_SOCKET_TRACED: &str = "SEND_RESET_NO_SOCKET_TRACED";
}

// --- benchmark baselines (never attached by the daemon) ----------------------------------

/// The limit baseline: the least work that counts an IPv4/IPv6 TCP RST, headers at fixed
/// offsets (Ethernet, IPv4 without options or IPv6 without extension headers, TCP flags),
/// into [`MAP_LIMIT_COUNTS`].
pub const PROG_XDP_LIMIT: &str = "rstmon_xdp_limit";
/// [`PROG_XDP_LIMIT`] with zero or one VLAN tag (802.1Q or 802.1ad) before the IP header.
pub const PROG_XDP_LIMIT_VLAN: &str = "rstmon_xdp_limit_vlan";
/// Per-CPU array of `u64`, [`LIMIT_COUNTS_ENTRIES`] entries at [`limit_index`]: what the
/// limit baselines counted.
pub const MAP_LIMIT_COUNTS: &str = "LIMIT_COUNTS";
/// Entries of `LIMIT_COUNTS`: family (IPv4, IPv6) × flags (RST, RST|ACK).
pub const LIMIT_COUNTS_ENTRIES: u32 = 4;

/// Index of one counter within `LIMIT_COUNTS`; `v6` and `ack` are 0 or 1.
#[inline(always)]
pub const fn limit_index(v6: u32, ack: u32) -> u32 {
    (v6 & 1) * 2 + (ack & 1)
}
/// Diagnostic: [`PROG_XDP_LIMIT`]'s parse with `rstmon_xdp`'s per-interface counting
/// (`IFINDEX_SLOT` → `WIRE_SLOTS`).
pub const PROG_XDP_LIMIT_SLOT: &str = "rstmon_xdp_limit_slot";
