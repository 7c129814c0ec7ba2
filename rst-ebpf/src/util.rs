//! Counting and ring-buffer helpers shared by every program.

use core::{
    mem::{align_of, size_of},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{PerCpuArray, PerCpuHashMap},
};
use rst_common::{Stat, WIRE_SLOT_COUNTERS, WireSlot};

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
    if !try_count(map, key) {
        stat_add(Stat::CounterMapFull);
    }
}

/// [`count`] without the accounting of a full map: false when the map had no room.
#[inline(always)]
pub(crate) fn try_count<K>(map: &PerCpuHashMap<K, u64>, key: &K) -> bool {
    if let Some(p) = map.get_ptr_mut(key) {
        // SAFETY: a per-CPU value owned by this CPU.
        unsafe { *p += 1 };
        return true;
    }
    if map.insert(key, 1u64, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    match map.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: as above.
            unsafe { *p += 1 };
            true
        }
        None => false,
    }
}

/// Adds one to a per-CPU array slot; false when `idx` is beyond the array.
#[inline(always)]
pub(crate) fn array_add(map: &PerCpuArray<u64>, idx: u32) -> bool {
    match map.get_ptr_mut(idx) {
        Some(p) => {
            // SAFETY: a per-CPU value owned by this CPU; programs do not nest on a CPU.
            unsafe { *p += 1 };
            true
        }
        None => false,
    }
}

/// Adds `n` to a per-CPU array slot; false when `idx` is beyond the array.
#[inline(always)]
pub(crate) fn array_add_n(map: &PerCpuArray<u64>, idx: u32, n: u64) -> bool {
    match map.get_ptr_mut(idx) {
        Some(p) => {
            // SAFETY: as in `array_add`.
            unsafe { *p += n };
            true
        }
        None => false,
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

/// `*p += v` as one atomic instruction (BPF `lock xadd`, every kernel): `core`'s atomics
/// offer no read-modify-write on this target.
///
/// # Safety
/// `p` must point to a live, 8-byte aligned u64 (a map value).
#[inline(always)]
pub(crate) unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller guarantees p; the instruction touches only *p.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v, options(nostack));
    }
}

/// Zeroes `*p` with 8-byte word stores. On this target LLVM turns a run of zero stores
/// (a struct literal, `[0; N]`) into a call to `memset`, a loop of one byte per
/// iteration; volatile word stores stay what they are.
///
/// # Safety
/// `p` must be valid for writes of a `T`, whose size is a multiple of 8 and whose
/// alignment is 8 (checked at compile time).
#[inline(always)]
pub(crate) unsafe fn zero_words<T>(p: *mut T) {
    const { assert!(align_of::<T>() == 8 && size_of::<T>().is_multiple_of(8)) };
    let w = p.cast::<u64>();
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word `i` of `*p`, which the caller guarantees.
        unsafe { write_volatile(w.add(i), 0) };
    }
}

/// Copies `*src` to `*dst` with 8-byte word moves: a plain struct copy becomes a call
/// to `memmove` on this target, a loop of one byte per iteration (see [`zero_words`]).
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of a `T`, whose size is a multiple
/// of 8 and whose alignment is 8 (checked at compile time).
#[inline(always)]
pub(crate) unsafe fn copy_words<T>(dst: *mut T, src: *const T) {
    const { assert!(align_of::<T>() == 8 && size_of::<T>().is_multiple_of(8)) };
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..size_of::<T>() / 8 {
        // SAFETY: word `i` of both, which the caller guarantees.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

/// Adds one to counter `within` (masked below [`WireSlot`]'s length) of entry `slot` of
/// a per-CPU array of [`WireSlot`]s; false when `slot` is out of range.
#[inline(always)]
pub(crate) fn slot_add(map: &PerCpuArray<WireSlot>, slot: u32, within: u32) -> bool {
    let Some(p) = map.get_ptr_mut(slot) else {
        return false;
    };
    let mut i = within as u64;
    // The mask as an instruction the verifier sees next to the pointer arithmetic: LLVM
    // drops a Rust `&` when it can prove the index small, and 6.1's verifier (the VM
    // tier's) could not follow that proof through 32-bit arithmetic ("math between
    // map_value pointer and register with unbounded min value").
    // SAFETY: an AND on a register.
    unsafe {
        core::arch::asm!("{i} &= {m}", i = inout(reg) i, m = const WIRE_SLOT_COUNTERS as u64 - 1)
    };
    // SAFETY: this CPU's value, `i` below its length; XDP and TC do not nest on a CPU
    // (a TC program runs with bottom halves off).
    unsafe { *p.cast::<u64>().add(i as usize) += 1 };
    true
}
