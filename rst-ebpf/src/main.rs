//! rstmon's kernel side.
//!
//! * `rstmon_xdp`: counts every ingress TCP RST exactly (per-CPU) and samples it into
//!   the ring buffer through a per-CPU token bucket. It never changes traffic: every
//!   path returns `XDP_PASS`.
//! * `rstmon_send_reset` (`tcp:tcp_send_reset`) and `rstmon_receive_reset`
//!   (`tcp:tcp_receive_reset`): count by classification key, exactly, and sample.
//! * `rstmon_xdp_noop`: the benchmark baseline.
#![no_std]
#![no_main]

mod trace;
mod util;
mod xdp;

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
};
use rst_common::{
    COUNTER_MAP_ENTRIES, EVENTS_BYTES, RecvKey, STAT_COUNT, SendKey, TokenBucket, TraceOffsets,
    WireKey,
};

// --- configuration, written by user space at load time ---------------------------------

/// Wire samples per second per CPU; 0 = wire sampling off, u32::MAX = unlimited.
#[unsafe(no_mangle)]
pub(crate) static WIRE_SAMPLES_PER_SEC: u32 = u32::MAX;
/// Bytes of samples per forced consumer wakeup (see `wakeup_flags`).
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_BYTES: u32 = 64 * 1024;
#[unsafe(no_mangle)]
pub(crate) static TRACE_OFFSETS: TraceOffsets = TraceOffsets::NONE;

// --- maps -------------------------------------------------------------------------------

#[map(name = "WIRE_COUNTERS")]
pub(crate) static WIRE_COUNTERS: PerCpuHashMap<WireKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "SEND_COUNTERS")]
pub(crate) static SEND_COUNTERS: PerCpuHashMap<SendKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "RECV_COUNTERS")]
pub(crate) static RECV_COUNTERS: PerCpuHashMap<RecvKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "STATS")]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
#[map(name = "BUCKET")]
pub(crate) static BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);
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
