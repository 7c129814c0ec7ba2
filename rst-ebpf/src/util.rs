//! Counting and ring-buffer helpers shared by every program.

use core::ptr::read_volatile;

use aya_ebpf::{bindings::BPF_NOEXIST, maps::PerCpuHashMap};
use rst_common::Stat;

use crate::{
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, EVENTS, STATS, WAKEUP_BYTES,
};

#[inline(always)]
pub(crate) fn stat_add(stat: Stat) {
    if let Some(p) = STATS.get_ptr_mut(stat.index()) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *p += 1 };
    }
}

/// Adds one to a per-CPU counter, creating it on first use without ever resetting
/// another CPU's slot (BPF_NOEXIST, then retry the lookup).
///
/// A plain add is exact: XDP does not nest on a CPU, and the kernel never runs a
/// tracing program nested inside another on the same CPU (`bpf_prog_active`).
#[inline(always)]
pub(crate) fn count<K>(map: &PerCpuHashMap<K, u64>, key: &K) {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU value owned by this CPU.
        unsafe { *p += 1 };
        return;
    }
    if map.insert(key, 1u64, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    match map.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(p) => unsafe { *p += 1 },
        None => stat_add(Stat::CounterMapFull),
    }
}

/// Submit flags for a record of `record` bytes that brings a byte count to `after`: a
/// forced consumer wakeup each time the count crosses another multiple of WAKEUP_BYTES,
/// no wakeup otherwise.
///
/// A wakeup costs microseconds here (an IPI). Forcing one for every sample while the
/// consumer is behind, as "pending >= threshold" would, costs that much per sample
/// exactly when samples are many (6 µs each, measured); crossing multiples wakes once
/// per WAKEUP_BYTES however far behind the consumer is, and a lost wakeup is made good
/// by the next crossing (the daemon also drains on a timer).
#[inline(always)]
pub(crate) fn wakeup_flags(after: u64, record: u64) -> u64 {
    // SAFETY: a plain read of a load-time constant.
    let threshold = unsafe { read_volatile(&WAKEUP_BYTES) } as u64;
    match after.checked_rem(threshold) {
        Some(r) if threshold > record && r >= record => BPF_RB_NO_WAKEUP,
        _ => BPF_RB_FORCE_WAKEUP,
    }
}

/// Submit flags for a trace sample of `record` bytes (header included), by the data
/// pending in the ring buffer (see [`wakeup_flags`]).
#[inline(always)]
pub(crate) fn submit_flags(record: u64) -> u64 {
    wakeup_flags(EVENTS.query(BPF_RB_AVAIL_DATA) + record, record)
}
