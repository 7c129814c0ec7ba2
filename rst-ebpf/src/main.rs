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

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint, xdp},
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{TracePointContext, XdpContext},
};
use rst_common::{
    COUNTER_MAP_ENTRIES, EVENT_RECV, EVENT_SEND, EVENT_WIRE, EVENTS_BYTES, FAMILY_IPV4,
    FAMILY_IPV6, NO_TRIGGER, OFF_NONE, ORIGIN_SOCKET, ORIGIN_STATELESS, ORIGIN_UNKNOWN,
    REASON_UNAVAILABLE, RecvKey, SEND_LINGER0, SEND_TRIG_DATA, STAT_COUNT, STAT_COUNTER_MAP_FULL,
    STAT_READ_ERRORS, STAT_TRACE_RING_FULL, STAT_TRACE_SAMPLED, STAT_WIRE_RATE_LIMITED,
    STAT_WIRE_RING_FULL, STAT_WIRE_SAMPLED, SendKey, TCP_ACK, TokenBucket, TraceEvent,
    TraceOffsets, WireEvent, WireKey,
    parse::{fill_sample, parse_rst},
};

// --- configuration, written by user space at load time ---------------------------------

/// Wire samples per second per CPU; 0 = wire sampling off, u32::MAX = unlimited.
#[unsafe(no_mangle)]
static WIRE_SAMPLES_PER_SEC: u32 = u32::MAX;
/// Bytes of samples per forced consumer wakeup (see `wakeup_flags`).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u32 = 64 * 1024;
#[unsafe(no_mangle)]
static TRACE_OFFSETS: TraceOffsets = TraceOffsets::NONE;

// --- maps -------------------------------------------------------------------------------

#[map(name = "WIRE_COUNTERS")]
static WIRE_COUNTERS: PerCpuHashMap<WireKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "SEND_COUNTERS")]
static SEND_COUNTERS: PerCpuHashMap<SendKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "RECV_COUNTERS")]
static RECV_COUNTERS: PerCpuHashMap<RecvKey, u64> =
    PerCpuHashMap::with_max_entries(COUNTER_MAP_ENTRIES, 0);
#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
#[map(name = "BUCKET")]
static BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const NSEC_PER_SEC: u64 = 1_000_000_000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

#[inline(always)]
fn stat_add(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
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
fn count<K>(map: &PerCpuHashMap<K, u64>, key: &K) {
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
        None => stat_add(STAT_COUNTER_MAP_FULL),
    }
}

/// Ring-buffer bytes of one wire sample: the record and its 8-byte header.
const WIRE_RECORD_BYTES: u64 = size_of::<WireEvent>().next_multiple_of(8) as u64 + 8;

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
fn wakeup_flags(after: u64, record: u64) -> u64 {
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
fn submit_flags(record: u64) -> u64 {
    wakeup_flags(EVENTS.query(BPF_RB_AVAIL_DATA) + record, record)
}

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
        stat_add(STAT_WIRE_RATE_LIMITED);
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
    let Some(sampled) = STATS.get_ptr_mut(STAT_WIRE_SAMPLED) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<WireEvent>(0) else {
        stat_add(STAT_WIRE_RING_FULL);
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

// --- tracepoints --------------------------------------------------------------------------

#[inline(always)]
fn offsets() -> TraceOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { read_volatile(&TRACE_OFFSETS) }
}

#[inline(always)]
fn tp_read<T>(ctx: &TracePointContext, off: u16) -> Option<T> {
    if off == OFF_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

#[inline(always)]
fn kread<T>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == OFF_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// TCP flags of the segment in `skb` (its transport header) and whether it carries
/// payload; flags 0 when unreadable.
#[inline(always)]
fn skb_tcp_info(skb: u64, o: &TraceOffsets) -> (u8, bool) {
    let (Some(head), Some(th)) = (
        kread::<u64>(skb, o.skb_head),
        kread::<u16>(skb, o.skb_transport_header),
    ) else {
        stat_add(STAT_READ_ERRORS);
        return (0, false);
    };
    if th == u16::MAX || head == 0 {
        return (0, false);
    }
    let th_addr = head + th as u64;
    // SAFETY: bpf_probe_read_kernel checks the address.
    let Ok(hdr) = (unsafe { bpf_probe_read_kernel((th_addr + 12) as *const [u8; 2]) }) else {
        stat_add(STAT_READ_ERRORS);
        return (0, false);
    };
    let flags = hdr[1];
    let doff = ((hdr[0] >> 4) as u64) * 4;
    // skb->len counts from skb->data, which may sit before or at the TCP header.
    let data_payload = match (kread::<u64>(skb, o.skb_data), kread::<u32>(skb, o.skb_len)) {
        (Some(data), Some(len)) if data != 0 => {
            let end = data + len as u64;
            end > th_addr + doff
        }
        _ => false,
    };
    (flags, data_payload)
}

#[inline(always)]
fn family_of(af: u16) -> u8 {
    match af {
        AF_INET => FAMILY_IPV4,
        AF_INET6 => FAMILY_IPV6,
        _ => 0,
    }
}

/// Reads a sockaddr_in/in6 stored in a 28-byte tracepoint field.
#[inline(always)]
fn read_sockaddr(ctx: &TracePointContext, off: u16, addr: &mut [u8; 16]) -> (u16, u16) {
    let af: u16 = tp_read(ctx, off).unwrap_or(0);
    let port = u16::from_be(tp_read::<u16>(ctx, off.wrapping_add(2)).unwrap_or(0));
    if af == AF_INET {
        let a: [u8; 4] = tp_read(ctx, off.wrapping_add(4)).unwrap_or([0; 4]);
        addr[..4].copy_from_slice(&a);
    } else if af == AF_INET6 {
        *addr = tp_read(ctx, off.wrapping_add(8)).unwrap_or([0; 16]);
    }
    (af, port)
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn rstmon_send_reset(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let skb: u64 = tp_read(&ctx, o.sr_skbaddr).unwrap_or(0);
    let sk: u64 = tp_read(&ctx, o.sr_skaddr).unwrap_or(0);
    let state = tp_read::<i32>(&ctx, o.sr_state).unwrap_or(0) as u8;
    let reason: u32 = tp_read(&ctx, o.sr_reason).unwrap_or(REASON_UNAVAILABLE);

    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    let (af, sport, dport) = if o.sr_sockaddr == 1 {
        let (af, sport) = read_sockaddr(&ctx, o.sr_saddr, &mut saddr);
        let (_, dport) = read_sockaddr(&ctx, o.sr_daddr, &mut daddr);
        (af, sport, dport)
    } else {
        let af: u16 = tp_read(&ctx, o.sr_family).unwrap_or(0);
        if af == AF_INET6 {
            saddr = tp_read(&ctx, o.sr_saddr_v6).unwrap_or([0; 16]);
            daddr = tp_read(&ctx, o.sr_daddr_v6).unwrap_or([0; 16]);
        } else {
            let s: [u8; 4] = tp_read(&ctx, o.sr_saddr).unwrap_or([0; 4]);
            let d: [u8; 4] = tp_read(&ctx, o.sr_daddr).unwrap_or([0; 4]);
            saddr[..4].copy_from_slice(&s);
            daddr[..4].copy_from_slice(&d);
        }
        let sport: u16 = tp_read(&ctx, o.sr_sport).unwrap_or(0);
        let dport: u16 = tp_read(&ctx, o.sr_dport).unwrap_or(0);
        (af, sport, dport)
    };

    let (trig_flags, trig_data) = if skb != 0 {
        skb_tcp_info(skb, &o)
    } else {
        (NO_TRIGGER, false)
    };
    // sk_flags/sk_lingertime live only in a full socket: not in a time-wait or
    // request mini-socket, whose memory ends before them.
    let mut bits = if trig_data { SEND_TRIG_DATA } else { 0 };
    if sk != 0 && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV {
        match (
            kread::<u64>(sk, o.sk_flags),
            kread::<i64>(sk, o.sk_lingertime),
        ) {
            (Some(flags), Some(lt)) => {
                if o.sock_linger_bit < 64 && (flags >> o.sock_linger_bit) & 1 == 1 && lt == 0 {
                    bits |= SEND_LINGER0;
                }
            }
            _ => stat_add(STAT_READ_ERRORS),
        }
    }
    let key = SendKey {
        reason,
        state,
        family: family_of(af),
        trig_flags,
        bits,
    };
    count(&SEND_COUNTERS, &key);
    emit(EVENT_SEND, key, &saddr, &daddr, sport, dport);
    0
}

/// Samples a sent or received reset into the ring buffer.
#[inline(always)]
fn emit<K: 'static>(kind: u8, key: K, saddr: &[u8; 16], daddr: &[u8; 16], sport: u16, dport: u16) {
    let flags = submit_flags(size_of::<TraceEvent<K>>().next_multiple_of(8) as u64 + 8);
    let Some(mut entry) = EVENTS.reserve::<TraceEvent<K>>(0) else {
        stat_add(STAT_TRACE_RING_FULL);
        return;
    };
    // SAFETY: the reservation is sizeof(TraceEvent<K>) bytes; every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = kind;
    ev._pad0 = [0; 7];
    ev.key = key;
    // SAFETY: helper without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.saddr = *saddr;
    ev.daddr = *daddr;
    ev.sport = sport;
    ev.dport = dport;
    ev._pad1 = [0; 4];
    entry.submit(flags);
    stat_add(STAT_TRACE_SAMPLED);
}

/// Reads one bit at an absolute bit offset of a kernel object.
#[inline(always)]
fn kbit(base: u64, bit: u16) -> Option<bool> {
    if bit == OFF_NONE {
        return None;
    }
    kread::<u8>(base, bit / 8).map(|b| (b >> (bit % 8)) & 1 == 1)
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn rstmon_receive_reset(ctx: TracePointContext) -> u32 {
    let o = offsets();
    let sk: u64 = tp_read(&ctx, o.rr_skaddr).unwrap_or(0);
    let af: u16 = tp_read(&ctx, o.rr_family).unwrap_or(0);
    let sport: u16 = tp_read(&ctx, o.rr_sport).unwrap_or(0);
    let dport: u16 = tp_read(&ctx, o.rr_dport).unwrap_or(0);
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if af == AF_INET6 {
        saddr = tp_read(&ctx, o.rr_saddr_v6).unwrap_or([0; 16]);
        daddr = tp_read(&ctx, o.rr_daddr_v6).unwrap_or([0; 16]);
    } else {
        let s: [u8; 4] = tp_read(&ctx, o.rr_saddr).unwrap_or([0; 4]);
        let d: [u8; 4] = tp_read(&ctx, o.rr_daddr).unwrap_or([0; 4]);
        saddr[..4].copy_from_slice(&s);
        daddr[..4].copy_from_slice(&d);
    }
    let state = match kread::<u8>(sk, o.sk_state) {
        Some(s) => s,
        None => {
            stat_add(STAT_READ_ERRORS);
            0
        }
    };
    // tcp_validate_incoming parsed the RST's options into tp->rx_opt just before
    // tcp_reset: on a connection with timestamps, an RST from the peer's socket carries
    // one and the stateless RST of a host that lost the connection does not.
    let origin = match (kbit(sk, o.tp_tstamp_ok_bit), kbit(sk, o.tp_saw_tstamp_bit)) {
        (Some(true), Some(true)) => ORIGIN_SOCKET,
        (Some(true), Some(false)) => ORIGIN_STATELESS,
        _ => ORIGIN_UNKNOWN,
    };
    let key = RecvKey {
        state,
        family: family_of(af),
        origin,
        _pad: [0; 5],
    };
    count(&RECV_COUNTERS, &key);
    emit(EVENT_RECV, key, &saddr, &daddr, sport, dport);
    0
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
