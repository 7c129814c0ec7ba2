//! What the XDP (ingress) and TC (egress) programs share: exact per-interface RST
//! counting and the rate-limited wire sample.

use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns};
use rst_common::{
    EVENT_WIRE, FAMILY_IPV4, FAMILY_IPV6, Stat, WireEvent, WireKey,
    parse::{fill_sample, parse_rst},
    wire_slot_index,
};

use crate::{
    BPF_RB_NO_WAKEUP, BUCKET, COARSE_CLOCK, EVENTS, IFINDEX_SLOT, STATS, WIRE_COUNTERS, WIRE_SLOTS,
    WIRE_UNATTRIBUTED,
    util::{array_add, atomic_add, slot_add, stat_add, try_count, wakeup_flags},
};

const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Ring-buffer bytes of one wire sample: the record and its 8-byte header.
const WIRE_RECORD_BYTES: u64 = size_of::<WireEvent>().next_multiple_of(8) as u64 + 8;

/// A sampler's rate limit (`window`: the wire sampler's, over all CPUs and both
/// directions, or the trace sampler's): at most `rate`
/// samples in each second of the coarse monotonic clock (tick resolution, cheaper to
/// read than the precise one; the precise one where the kernel has no coarse helper,
/// before 5.11).
///
/// The window is shared by every CPU. Plain reads and stores of it race benignly (two
/// CPUs may both reset a new second; the count may overshoot by the CPUs that pass the
/// check at once) and the count is added atomically; once the second's samples are
/// taken, a flood only reads the window, so its cache line is not bounced between CPUs.
#[inline(always)]
pub(crate) fn take_sample(rate: u32, window: u32) -> bool {
    if rate == u32::MAX {
        return true;
    }
    // SAFETY: a plain read of a load-time constant; helpers without preconditions.
    let now = unsafe {
        if read_volatile(&COARSE_CLOCK) != 0 {
            bpf_ktime_get_coarse_ns()
        } else {
            bpf_ktime_get_ns()
        }
    };
    take_sample_at(rate, window, now)
}

/// [`take_sample`] at a time the caller read (tracing programs may not read the coarse
/// clock, and the trace sampler reuses its sample's own time stamp).
#[inline(always)]
pub(crate) fn take_sample_at(rate: u32, window: u32, now: u64) -> bool {
    if rate == u32::MAX {
        return true;
    }
    let Some(w) = BUCKET.get_ptr_mut(window) else {
        return false;
    };
    let second = now / NSEC_PER_SEC;
    // SAFETY: a valid map value; concurrent access is the benign race described above.
    unsafe {
        if (*w).second != second {
            (*w).second = second;
            (*w).count = 0;
        }
        if (*w).count >= rate as u64 {
            return false;
        }
        atomic_add(&raw mut (*w).count, 1);
    }
    true
}

/// Counts one RST of `ifindex` in `direction` exactly: in the interface's slot when it
/// has one, else in the overflow hash map, else (that map full) in the unattributed
/// counters.
#[inline(always)]
pub(crate) fn count_wire(ifindex: u32, direction: u8, v6: u32, ack: u32) {
    if let Some(slot) = IFINDEX_SLOT.get(ifindex)
        && *slot != 0
        && slot_add(
            &WIRE_SLOTS,
            *slot - 1,
            wire_slot_index(0, direction, v6, ack),
        )
    {
        return;
    }
    let key = WireKey {
        ifindex,
        family: if v6 != 0 { FAMILY_IPV6 } else { FAMILY_IPV4 },
        ack: ack as u8,
        direction,
        _pad: 0,
    };
    if !try_count(&WIRE_COUNTERS, &key) {
        array_add(&WIRE_UNATTRIBUTED, wire_slot_index(0, direction, v6, ack));
        stat_add(Stat::CounterMapFull);
    }
}

/// Writes one wire sample into the ring buffer; a full ring buffer is counted.
///
/// The frame is parsed again here instead of keeping the first parse's result alive
/// across the map helper calls: the counted-only path then spills none of it. The same bytes parse the same way (neither program changes packet
/// data, and no helper called in between does), so the second parse cannot fail.
#[inline(always)]
pub(crate) fn wire_sample(start: usize, end: usize, ifindex: u32, direction: u8, origin: u8) {
    let Some(rst) = parse_rst(start, end) else {
        return;
    };
    let Some(sampled) = STATS.get_ptr_mut(Stat::WireSampled.index()) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<WireEvent>(0) else {
        stat_add(Stat::WireRingFull);
        return;
    };
    // SAFETY: the reservation is sizeof(WireEvent) bytes; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_WIRE;
    ev.ifindex = ifindex;
    ev.direction = direction;
    ev.origin = origin;
    ev._pad = [0; 2];
    // SAFETY: helper without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    if fill_sample(start, end, &rst, ev).is_none() {
        // Cannot happen after parse_rst succeeded; never submit a half-written sample.
        entry.discard(BPF_RB_NO_WAKEUP);
        return;
    }
    // This CPU's wire samples so far, which also times the wakeups: one per WAKEUP_BYTES
    // of them, without a ring-buffer query per sample.
    // SAFETY: per-CPU slot; XDP and TC do not nest on a CPU (a TC program runs with
    // bottom halves off).
    let n = unsafe { *sampled } + 1;
    // SAFETY: as above.
    unsafe { *sampled = n };
    entry.submit(wakeup_flags(n * WIRE_RECORD_BYTES, WIRE_RECORD_BYTES));
}
