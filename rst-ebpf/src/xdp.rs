//! `rstmon_xdp`: counts every ingress TCP RST exactly and samples it; `rstmon_xdp_noop`,
//! the benchmark baseline.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use rst_common::{
    EVENT_WIRE, Stat, TCP_ACK, WireEvent, WireKey,
    parse::{fill_sample, parse_rst},
};

use crate::{
    BPF_RB_NO_WAKEUP, BUCKET, EVENTS, STATS, WIRE_COUNTERS, WIRE_SAMPLES_PER_SEC,
    util::{count, stat_add, wakeup_flags},
};

const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Ring-buffer bytes of one wire sample: the record and its 8-byte header.
const WIRE_RECORD_BYTES: u64 = size_of::<WireEvent>().next_multiple_of(8) as u64 + 8;

/// Per-CPU token bucket: `rate` samples/s with a burst of one second's worth.
///
/// It runs for every RST of a flood, so it reads the coarse clock (tick resolution,
/// 20 ns here) rather than the precise one (37 ns): tokens then arrive in tick-sized
/// steps, at the same average rate.
#[inline(always)]
fn take_token(rate: u32) -> bool {
    if rate == u32::MAX {
        return true;
    }
    if rate == 0 {
        return false;
    }
    let Some(b) = BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot; XDP does not nest on a CPU.
    let b = unsafe { &mut *b };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let cap = rate as u64 * NSEC_PER_SEC;
    let elapsed = now.wrapping_sub(b.last_ns);
    b.last_ns = now;
    let mut tokens = if elapsed >= NSEC_PER_SEC {
        cap
    } else {
        b.tokens + elapsed * rate as u64
    };
    if tokens > cap {
        tokens = cap;
    }
    if tokens < NSEC_PER_SEC {
        b.tokens = tokens;
        return false;
    }
    b.tokens = tokens - NSEC_PER_SEC;
    true
}

// --- XDP ----------------------------------------------------------------------------------

#[xdp]
pub fn rstmon_xdp(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let Some(rst) = parse_rst(start, end) else {
        return xdp_action::XDP_PASS;
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    let key = WireKey {
        ifindex,
        family: rst.family,
        ack: (rst.flags & TCP_ACK != 0) as u8,
        _pad: [0; 2],
    };
    count(&WIRE_COUNTERS, &key);

    // SAFETY: a plain read of a load-time constant.
    if !take_token(unsafe { read_volatile(&WIRE_SAMPLES_PER_SEC) }) {
        stat_add(Stat::WireRateLimited);
        return xdp_action::XDP_PASS;
    }
    wire_sample(start, end, ifindex);
    xdp_action::XDP_PASS
}

/// Writes one wire sample into the ring buffer; a full ring buffer is counted.
///
/// The frame is parsed again here instead of keeping the first parse's copy of the TCP
/// header alive across the map helper calls: the counted-only path then neither loads
/// nor spills it. The same bytes parse the same way (XDP packet data does not change
/// under the program), so the second parse cannot fail.
#[inline(always)]
fn wire_sample(start: usize, end: usize, ifindex: u32) {
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
    ev._pad = [0; 4];
    // SAFETY: helper without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    if fill_sample(start, end, &rst, ev).is_none() {
        // Cannot happen after parse_rst succeeded; never submit a half-written sample.
        entry.discard(BPF_RB_NO_WAKEUP);
        return;
    }
    // This CPU's wire samples so far, which also times the wakeups: one per WAKEUP_BYTES
    // of them, without a ring-buffer query per sample.
    // SAFETY: per-CPU slot; XDP does not nest on a CPU.
    let n = unsafe { *sampled } + 1;
    // SAFETY: as above.
    unsafe { *sampled = n };
    entry.submit(wakeup_flags(n * WIRE_RECORD_BYTES, WIRE_RECORD_BYTES));
}

/// Benchmark baseline: the cheapest possible XDP program.
#[xdp]
pub fn rstmon_xdp_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
