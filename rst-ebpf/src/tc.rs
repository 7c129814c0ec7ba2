//! `rstmon_tc`, the TC egress classifier: counts every TCP RST that leaves a monitored
//! interface exactly (the slots of `xdp.rs`, direction egress), tells who made it, and
//! samples it under the wire sampler's shared rate limit; `rstmon_tc_noop`, the
//! benchmark baseline.
//!
//! It never changes traffic and never decides for anyone: every path returns
//! `TC_ACT_UNSPEC` (-1), which is `TCX_NEXT` on a tcx link (run the next program, then
//! the default: pass) and "continue with the next filter" in a clsact classifier chain
//! (no filter left: pass). `TC_ACT_OK` would end a tcx chain and skip the programs and
//! filters after rstmon's.
//!
//! Who made an RST (`EGRESS_*`), decided in this order:
//! 1. received on another interface (`ingress_ifindex` ≠ 0): forwarded or bridged;
//! 2. announced by `tcp_send_reset` (an entry of `PENDING_RESETS` with its addresses and
//!    ports, younger than `PENDING_RESET_TTL_NS`): a passive reset of the TCP stack
//!    (`tcp_v4_send_reset`/`tcp_v6_send_reset` fire the tracepoint before they build and
//!    send the RST), already counted as sent;
//! 3. no socket (`skb->sk` NULL): netfilter's `nf_send_reset`, which builds its RST in a
//!    fresh skb and sends it without one — except, on a kernel whose tracepoint misses
//!    resets without a socket, an IPv6 RST with a non-zero flow label: the stack's
//!    (`tcp_v6_send_response` sends through `ip6_xmit`, which leaves `skb->sk` NULL and
//!    sets the automatic flow label; netfilter's label is always 0);
//! 4. a full TCP socket (SOCK_STREAM): an active reset (`tcp_send_active_reset`: abort,
//!    zero-linger close, unread data at close), which the kernel sends *before* it fires
//!    the tracepoint, with the socket as `skb->sk`: the stack's, counted as sent by the
//!    tracepoint right after;
//! 5. a TCP mini-socket (time-wait, request) with no announcement: the stack, unmatched
//!    (its tracepoint hit was skipped, or the RST waited longer than the TTL);
//! 6. a packet socket, or a raw socket — except a SOCK_RAW IPPROTO_TCP socket on a
//!    kernel whose tracepoint misses resets without a socket (`SEND_RESET_NO_SOCKET_TRACED`
//!    0): that is taken for the TCP stack's control socket and counted as a sent reset.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, bpf_sock},
    helpers::{bpf_ktime_get_ns, bpf_sk_fullsock},
    macros::classifier,
    programs::TcContext,
};
use rst_common::{
    DIR_EGRESS, EGRESS_FIREWALL, EGRESS_FORWARDED, EGRESS_RAW_SOCKET, EGRESS_STACK,
    EGRESS_STACK_UNTRACED, EGRESS_UNMATCHED, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_TCP,
    PENDING_RESET_TTL_NS, PendingKey, Stat, TCP_ACK, TCP_RST, WireKey, egress_origin_index,
    parse::{Rst, load, parse_rst, surely_not},
};

use crate::{
    EGRESS_ORIGINS, FORWARDED, FORWARDED_UNATTRIBUTED, PENDING_RESETS, SEND_RESET_NO_SOCKET_TRACED,
    TC_SAMPLE, TC_SAMPLE_ORIGIN, WINDOW_WIRE, WIRE_SAMPLES_PER_SEC,
    util::{array_add, atomic_add, stat_add, try_count},
    wire::{count_wire, take_sample, wire_sample},
};

const AF_PACKET: u32 = 17;
const SOCK_STREAM: u32 = 1;
const SOCK_RAW: u32 = 3;

#[classifier]
pub fn rstmon_tc(ctx: TcContext) -> i32 {
    // As in `rstmon_xdp`: the non-RST path is the fixed-offset test alone, the rest a
    // subprogram, so that the JIT saves no callee-saved register for most packets.
    if surely_not(ctx.data(), ctx.data_end(), TCP_RST) {
        return TC_ACT_UNSPEC;
    }
    rst(ctx)
}

/// `rstmon_tc` for a frame the fixed-offset test did not rule out.
#[inline(never)]
fn rst(ctx: TcContext) -> i32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let Some(rst) = parse_rst(start, end) else {
        return TC_ACT_UNSPEC;
    };
    let skb = ctx.skb.skb;
    // SAFETY: the program's context; the verifier rewrites these loads.
    let (ifindex, iif, sk) = unsafe {
        (
            (*skb).ifindex,
            (*skb).ingress_ifindex,
            (*skb).__bindgen_anon_2.sk,
        )
    };
    let v6 = (rst.family == FAMILY_IPV6) as u32;
    let ack = (rst.flags & TCP_ACK != 0) as u32;
    count_wire(ifindex, DIR_EGRESS, v6, ack);

    let origin = origin(start, end, &rst, iif, sk);
    array_add(&EGRESS_ORIGINS, egress_origin_index(origin, v6, ack));
    if origin == EGRESS_FORWARDED {
        let key = WireKey {
            ifindex,
            family: rst.family,
            ack: 0,
            direction: DIR_EGRESS,
            _pad: 0,
        };
        if !try_count(&FORWARDED, &key) {
            array_add(&FORWARDED_UNATTRIBUTED, v6);
            stat_add(Stat::CounterMapFull);
        }
    }

    // SAFETY: a plain read of a load-time constant.
    let rate = unsafe { read_volatile(&WIRE_SAMPLES_PER_SEC) };
    if rate == 0 {
        return TC_ACT_UNSPEC;
    }
    if !take_sample(rate, WINDOW_WIRE) {
        stat_add(Stat::WireRateLimited);
        return TC_ACT_UNSPEC;
    }
    // The sample is taken by a program of its own, so that the verifier checks this
    // one's origins and that one's parse and fill apart: together, 6.1's verifier gave
    // up at its limit of 1 000 000 instructions. The origin goes along in a per-CPU
    // slot (TC programs do not nest on a CPU: they run with bottom halves off).
    if let Some(p) = TC_SAMPLE_ORIGIN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { *p = origin as u32 };
    }
    // SAFETY: the tail call does not return when it succeeds. It fails only when the
    // sampler is not in the program array, and user space puts it there before it
    // attaches this program: then no sample is taken.
    unsafe { TC_SAMPLE.tail_call(&ctx, 0) };
    TC_ACT_UNSPEC
}

/// The egress sampler, tail-called by `rstmon_tc` for an RST it counted and chose to
/// sample: parses the frame again and writes the sample.
#[classifier]
pub fn rstmon_tc_sample(ctx: TcContext) -> i32 {
    let origin = TC_SAMPLE_ORIGIN.get(0).map_or(0, |o| *o as u8);
    let skb = ctx.skb.skb;
    // SAFETY: the program's context; the verifier rewrites this load.
    let ifindex = unsafe { (*skb).ifindex };
    wire_sample(ctx.data(), ctx.data_end(), ifindex, DIR_EGRESS, origin);
    TC_ACT_UNSPEC
}

/// Who made the RST `rst` (see the module documentation).
#[inline(always)]
fn origin(start: usize, end: usize, rst: &Rst, iif: u32, sk: *mut bpf_sock) -> u8 {
    if iif != 0 {
        return EGRESS_FORWARDED;
    }
    if announced(start, end, rst) {
        return EGRESS_STACK;
    }
    // SAFETY: a plain read of a load-time constant.
    let traced = unsafe { read_volatile(&SEND_RESET_NO_SOCKET_TRACED) };
    if sk.is_null() {
        // Before 6.10 the stack's IPv6 RSTs without a socket leave without one too
        // (ip6_xmit on the control socket does not own the skb): netfilter's carry flow
        // label 0 (nf_reject_ip6hdr_put), the stack's the automatic one (ip6_xmit,
        // net.ipv6.auto_flowlabels at its default).
        if traced == 0 && rst.family == FAMILY_IPV6 && flow_label(start, end, rst) != 0 {
            return EGRESS_STACK_UNTRACED;
        }
        return EGRESS_FIREWALL;
    }
    // SAFETY: a non-NULL socket of the context.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        // A time-wait or request mini-socket: only TCP has those.
        return EGRESS_UNMATCHED;
    }
    // SAFETY: a full socket the helper returned; the verifier rewrites these loads.
    let (family, ty, protocol) = unsafe { ((*full).family, (*full).type_, (*full).protocol) };
    if family == AF_PACKET {
        return EGRESS_RAW_SOCKET;
    }
    if ty == SOCK_STREAM {
        return EGRESS_STACK;
    }
    if ty == SOCK_RAW && protocol == IPPROTO_TCP as u32 && traced == 0 {
        return EGRESS_STACK_UNTRACED;
    }
    EGRESS_RAW_SOCKET
}

/// The flow label of an IPv6 RST (0 when unreadable).
#[inline(always)]
fn flow_label(start: usize, end: usize, rst: &Rst) -> u32 {
    load::<[u8; 4]>(start, end, rst.l3).map_or(0, |w| u32::from_be_bytes(w) & 0x000f_ffff)
}

/// Whether `tcp_send_reset` announced this RST (and it has not left yet): consumes one
/// announcement.
#[inline(always)]
fn announced(start: usize, end: usize, rst: &Rst) -> bool {
    let Some(key) = pending_key(start, end, rst) else {
        return false;
    };
    let Some(p) = PENDING_RESETS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a live map value; the count is changed atomically only.
    unsafe {
        let count = &raw mut (*p).count;
        // Saturating: another CPU may have announced it again after `now` was read.
        if read_volatile(count) == 0 || now.saturating_sub((*p).ts_ns) > PENDING_RESET_TTL_NS {
            return false;
        }
        // Take one (an atomic add of -1; a fetching atomic would need 5.12+). Two CPUs
        // taking the last one at once drive it below zero: whoever then sees it wrapped
        // gives its one back and counts the RST as unannounced, so the count can never
        // stay wrapped (which would announce every later RST of this address pair).
        atomic_add(count, u64::MAX);
        let left = read_volatile(count);
        if left > u64::MAX / 2 {
            atomic_add(count, 1);
            return false;
        }
        // The entry stays when its last one is taken: deleting it would lose an
        // announcement another CPU adds between the take and the delete (the same
        // connection's RSTs sent on two CPUs at once, as in a flood of one SYN), and that
        // RST would count as not the stack's. A spent entry (count 0) is refreshed by
        // the connection's next announcement or recycled by the LRU.
    }
    true
}

/// The `PENDING_RESETS` key of an RST on the wire (see [`PendingKey`]).
#[inline(always)]
fn pending_key(start: usize, end: usize, rst: &Rst) -> Option<PendingKey> {
    let [s0, s1, d0, d1]: [u8; 4] = load(start, end, rst.l4)?;
    let mut key = PendingKey {
        family: rst.family,
        _pad0: 0,
        sport: u16::from_be_bytes([s0, s1]),
        dport: u16::from_be_bytes([d0, d1]),
        _pad1: 0,
        saddr0: 0,
        saddr1: 0,
        daddr0: 0,
        daddr1: 0,
    };
    if rst.family == FAMILY_IPV4 {
        let s: [u8; 4] = load(start, end, rst.l3 + 12)?;
        let d: [u8; 4] = load(start, end, rst.l3 + 16)?;
        key.saddr0 = u32::from_ne_bytes(s) as u64;
        key.daddr0 = u32::from_ne_bytes(d) as u64;
    } else {
        let a: [[u8; 8]; 4] = load(start, end, rst.l3 + 8)?;
        key.saddr0 = u64::from_ne_bytes(a[0]);
        key.saddr1 = u64::from_ne_bytes(a[1]);
        key.daddr0 = u64::from_ne_bytes(a[2]);
        key.daddr1 = u64::from_ne_bytes(a[3]);
    }
    Some(key)
}

/// Benchmark baseline: the cheapest possible TC program.
#[classifier]
pub fn rstmon_tc_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}
