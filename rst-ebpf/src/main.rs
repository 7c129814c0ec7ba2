//! rstmon's kernel side.
//!
//! * `rstmon_xdp`: counts every ingress TCP RST exactly (per-CPU, in the slot the
//!   interface controller gave the interface, or on an exact overflow path) and samples
//!   it into the ring buffer under a rate limit shared by all CPUs. It never changes
//!   traffic: every path returns `XDP_PASS`.
//! * `rstmon_tc`: the TC egress classifier: counts every egress TCP RST exactly (the
//!   same slots, direction egress), tells who made it (`EGRESS_ORIGINS`, `FORWARDED`)
//!   and samples it under the same shared rate limit. It never changes traffic and never
//!   overrides another classifier: every path returns `TC_ACT_UNSPEC`.
//! * `rstmon_send_reset` and `rstmon_receive_reset`, raw tracepoints on the kernel's
//!   `tcp_send_reset` and `tcp_receive_reset`: count by classification key, exactly, and
//!   sample, with the socket's owner, process and connection context (`sock.rs`).
//!   `rstmon_send_reset` also announces each reset in `PENDING_RESETS`, for `rstmon_tc`.
//! * `rstmon_sock_set_state`, a raw tracepoint on `inet_sock_set_state`: records the
//!   connect() and listen() callers and each connection's start.
//! * `rstmon_kfree_skb`, a raw tracepoint on `skb:kfree_skb`, with `rstmon_xdp` and
//!   `rstmon_receive_reset`: the verdict of each ingress RST and the forged-reset
//!   signals (`verdict.rs`).
//! * `rstmon_xdp_noop`, `rstmon_tc_noop`: the benchmark baselines.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod limit;
mod sock;
mod tc;
mod trace;
mod util;
mod verdict;
mod wire;
mod xdp;

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use rst_common::{
    CONN_TABLE_ENTRIES, COUNTER_MAP_ENTRIES, ConnStart, EGRESS_ORIGIN_COUNTERS, EVENTS_BYTES,
    FORWARDED_ENTRIES, HISTOGRAM_ENTRIES, IFINDEX_SLOT_ENTRIES, LISTEN_TABLE_ENTRIES, ListenInfo,
    ListenKey, PENDING_RESETS_ENTRIES, PendingKey, PendingReset, RecvKey, STAT_COUNT, SampleWindow,
    SendKey, TraceOffsets, WIRE_OVERFLOW_ENTRIES, WIRE_SLOT_COUNTERS, WIRE_SLOTS_DEFAULT,
    WORKLOAD_MAP_ENTRIES, WireKey, WireSlot, WorkloadKey,
};

// --- configuration, written by user space at load time ---------------------------------

/// Wire samples per second over all CPUs; 0 = wire sampling off, u32::MAX = unlimited.
#[unsafe(no_mangle)]
pub(crate) static WIRE_SAMPLES_PER_SEC: u32 = u32::MAX;
/// Send/receive samples per second over all CPUs; 0 = off, u32::MAX = unlimited.
#[unsafe(no_mangle)]
pub(crate) static TRACE_SAMPLES_PER_SEC: u32 = u32::MAX;
/// Bytes of samples per forced consumer wakeup (see `wakeup_flags`).
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u32 = 64 * 1024;
#[unsafe(no_mangle)]
pub(crate) static TRACE_OFFSETS: TraceOffsets = TraceOffsets::NONE;
/// 1: the wire sampler's rate limit reads `bpf_ktime_get_coarse_ns` (5.11+); 0: the
/// precise `bpf_ktime_get_ns` (kernels without the coarse helper). Frozen at load, so
/// the verifier never sees the call a kernel does not have.
#[unsafe(no_mangle)]
pub(crate) static COARSE_CLOCK: u32 = 1;
/// 1 when `tcp_send_reset` fires for resets without a socket (6.10+); 0 makes
/// `rstmon_tc` count the control socket's unannounced RSTs as sent resets.
#[unsafe(no_mangle)]
pub(crate) static SEND_RESET_NO_SOCKET_TRACED: u8 = 1;

// --- maps -------------------------------------------------------------------------------

#[map(name = "WIRE_SLOTS")]
pub(crate) static WIRE_SLOTS: PerCpuArray<WireSlot> =
    PerCpuArray::with_max_entries(WIRE_SLOTS_DEFAULT, 0);
#[map(name = "IFINDEX_SLOT")]
pub(crate) static IFINDEX_SLOT: Array<u32> = Array::with_max_entries(IFINDEX_SLOT_ENTRIES, 0);
#[map(name = "WIRE_COUNTERS")]
pub(crate) static WIRE_COUNTERS: PerCpuHashMap<WireKey, u64> =
    PerCpuHashMap::with_max_entries(WIRE_OVERFLOW_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "WIRE_UNATTRIBUTED")]
pub(crate) static WIRE_UNATTRIBUTED: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(WIRE_SLOT_COUNTERS, 0);
#[map(name = "SEND_COUNTERS")]
pub(crate) static SEND_COUNTERS: PerCpuHashMap<SendKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "RECV_COUNTERS")]
pub(crate) static RECV_COUNTERS: PerCpuHashMap<RecvKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "WORKLOAD_COUNTERS")]
pub(crate) static WORKLOAD_COUNTERS: PerCpuHashMap<WorkloadKey, u64> =
    PerCpuHashMap::with_max_entries(WORKLOAD_MAP_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "HISTOGRAMS")]
pub(crate) static HISTOGRAMS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(HISTOGRAM_ENTRIES, 0);
#[map(name = "CONNS")]
pub(crate) static CONNS: LruHashMap<u64, ConnStart> =
    LruHashMap::with_max_entries(CONN_TABLE_ENTRIES, 0);
#[map(name = "LISTENERS")]
pub(crate) static LISTENERS: LruHashMap<ListenKey, ListenInfo> =
    LruHashMap::with_max_entries(LISTEN_TABLE_ENTRIES, 0);
/// One reset's attribution and connection context, per CPU (too big for the stack).
/// Words of `sock::Scratch`.
pub(crate) const SCRATCH_WORDS: usize = 85;
#[map(name = "SCRATCH")]
pub(crate) static SCRATCH: PerCpuArray<[u64; SCRATCH_WORDS]> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
#[map(name = "BUCKET")]
pub(crate) static BUCKET: Array<SampleWindow> = Array::with_max_entries(2, 0);
/// The samplers' windows in `BUCKET`.
pub(crate) const WINDOW_WIRE: u32 = 0;
pub(crate) const WINDOW_TRACE: u32 = 1;
/// What the limit baselines (`limit.rs`) count: benchmarks only.
#[map(name = "LIMIT_COUNTS")]
pub(crate) static LIMIT_COUNTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(rst_common::LIMIT_COUNTS_ENTRIES, 0);
#[map(name = "EGRESS_ORIGINS")]
pub(crate) static EGRESS_ORIGINS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(EGRESS_ORIGIN_COUNTERS, 0);
#[map(name = "FORWARDED")]
pub(crate) static FORWARDED: PerCpuHashMap<WireKey, u64> =
    PerCpuHashMap::with_max_entries(FORWARDED_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "FORWARDED_UNATTRIBUTED")]
pub(crate) static FORWARDED_UNATTRIBUTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
#[map(name = "PENDING_RESETS")]
pub(crate) static PENDING_RESETS: LruHashMap<PendingKey, PendingReset> =
    LruHashMap::with_max_entries(PENDING_RESETS_ENTRIES, BPF_F_NO_COMMON_LRU);
/// One `u32`: non-zero once user space has loaded the TC egress program (the only
/// reader of `PENDING_RESETS`): until then the send handler announces nothing.
#[map(name = "EGRESS_ACTIVE")]
pub(crate) static EGRESS_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "TC_SAMPLE")]
pub(crate) static TC_SAMPLE: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map(name = "TC_SAMPLE_ORIGIN")]
pub(crate) static TC_SAMPLE_ORIGIN: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

pub(crate) const BPF_RB_NO_WAKEUP: u64 = 1;
pub(crate) const BPF_RB_FORCE_WAKEUP: u64 = 2;
pub(crate) const BPF_RB_AVAIL_DATA: u64 = 0;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
