//! The verdict of every ingress RST, joined in the kernel, and the forged-reset signals.
//!
//! XDP marks each RST in a per-CPU ring of [`MARKS`] marks ([`mark`]): the folded
//! addresses, ports, sequence number, interface and TTL, in word stores. The stack
//! processes the same frame on the same CPU in the same softirq (NAPI poll → GRO →
//! `netif_receive_skb` → `tcp_v4_rcv`/`tcp_v6_rcv`), in batches of `gro_normal_batch`
//! frames after XDP has seen each of them, so the mark is still there when:
//!
//! * `tcp:tcp_receive_reset` fires for the same connection ([`on_receive_reset`]):
//!   accepted;
//! * `skb:kfree_skb` frees the same segment with drop reason `TCP_RESET`
//!   ([`rstmon_kfree_skb`]): challenged (tcp_validate_incoming sent a challenge ACK).
//!
//! Nothing is counted for the other ingress RSTs: every one has exactly one fate, so
//! the daemon derives `ignored` per interface as counted − accepted − challenged.
//! `kfree_skb` fires for every dropped packet of the host; it tests the drop reason
//! first (a register compare) and returns at once for all but `TCP_RESET` and, while
//! an accepted RST is recent, `NO_SOCKET` (the `alive_after_reset` signal).

use aya_ebpf::{
    bindings::BPF_F_NO_COMMON_LRU,
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use core::ptr::read_volatile;
use rst_common::{
    AF_INET6, ALIVE_WINDOW_NS, Accepted, ConnKey, CounterKey, EVENT_VERDICT, FAMILY_IPV4,
    FAMILY_IPV6, KIND_SIGNAL, KIND_VERDICT, MARKS, Mark, MarkRing, SIGNAL_ALIVE_AFTER_RESET,
    SIGNAL_LRU_ENTRIES, SIGNAL_SEQ_SPRAY, SIGNAL_TTL, SPRAY_THRESHOLD, SPRAY_WINDOW_NS, SprayState,
    Stat, TCP_RST, TCP_SYN, TraceOffsets, VERDICT_ACCEPTED, VERDICT_CHALLENGED,
    VERDICT_COUNTER_ENTRIES, VerdictEvent, VerdictOffsets, parse::Rst, state,
};

use crate::{
    EVENTS,
    trace::{kread, offsets},
    util::{count, stat_add, submit_flags},
};

#[unsafe(no_mangle)]
pub(crate) static VERDICT_OFFSETS: VerdictOffsets = VerdictOffsets::NONE;

#[map(name = "VERDICT_COUNTERS")]
static VERDICT_COUNTERS: PerCpuHashMap<CounterKey, u64> =
    PerCpuHashMap::with_max_entries(VERDICT_COUNTER_ENTRIES, 0);
#[map(name = "MARK_RING")]
static MARK_RING: PerCpuArray<MarkRing> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "SPRAY")]
static SPRAY: LruHashMap<ConnKey, SprayState> =
    LruHashMap::with_max_entries(SIGNAL_LRU_ENTRIES, BPF_F_NO_COMMON_LRU);
/// The TTL/hop limit of the peer's SYN or SYN-ACK, per connection.
#[map(name = "PEER_TTL")]
static PEER_TTL: LruHashMap<ConnKey, u8> =
    LruHashMap::with_max_entries(SIGNAL_LRU_ENTRIES, BPF_F_NO_COMMON_LRU);
#[map(name = "ACCEPTED")]
static ACCEPTED: LruHashMap<ConnKey, Accepted> =
    LruHashMap::with_max_entries(SIGNAL_LRU_ENTRIES / 4, 0);
/// Entry 0: until when (monotonic ns) `NO_SOCKET` drops are looked at, 0 while no RST
/// was accepted: a flood of segments for no socket costs a load then.
#[map(name = "ALIVE_ARMED")]
static ALIVE_ARMED: Array<u64> = Array::with_max_entries(1, 0);

const MASK: u32 = MARKS - 1;
const _: () = assert!(MARKS.is_power_of_two());

#[inline(always)]
fn voff() -> VerdictOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { read_volatile(&VERDICT_OFFSETS) }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn bump(ifindex: u32, family: u8, kind: u8, value: u8) {
    let key = CounterKey {
        ifindex,
        family,
        kind,
        value,
        _pad: 0,
    };
    count(&VERDICT_COUNTERS, &key);
}

/// The 32-bit word at `p` in one load. IP addresses sit at 2-byte alignment behind a
/// 14-byte Ethernet header, so a plain (unaligned) read would become four byte loads on
/// this target; the verifier allows unaligned packet loads where the CPU has them
/// (x86-64, arm64).
///
/// # Safety
/// `[p, p + 4)` must lie inside the frame, checked against its end by the caller.
#[inline(always)]
unsafe fn word(p: usize) -> u32 {
    let v: u64;
    // SAFETY: the caller's range check; the instruction reads only those bytes.
    unsafe {
        core::arch::asm!("{v} = *(u32 *)({p} + 0)", v = out(reg) v, p = in(reg) p, options(nostack, readonly));
    }
    v as u32
}

/// The segment's folded addresses ([`rst_common::addr_fold`]) and TTL, from the frame
/// whose IP header is at `l3`: one range check, one load per word.
#[inline(always)]
fn frame_fold(start: usize, end: usize, l3: usize, family: u8) -> Option<(u32, u8)> {
    if family == FAMILY_IPV4 {
        // TTL at 8, the addresses at 12 and 16.
        let p = start + l3 + 8;
        if p + 12 > end {
            return None;
        }
        // SAFETY: [p, p + 12) is inside the frame.
        unsafe {
            let ttl = core::ptr::read_volatile(p as *const u8);
            Some((word(p + 4) ^ word(p + 8), ttl))
        }
    } else {
        // Hop limit at 7, the addresses at 8..40.
        let p = start + l3 + 7;
        if p + 33 > end {
            return None;
        }
        // SAFETY: [p, p + 33) is inside the frame.
        unsafe {
            let ttl = core::ptr::read_volatile(p as *const u8);
            let mut f = 0;
            for i in 0..8 {
                f ^= word(p + 1 + 4 * i);
            }
            Some((f, ttl))
        }
    }
}

/// The segment's ports (source << 16 | destination) and sequence number, from the TCP
/// header at `l4`.
#[inline(always)]
fn ports_seq(start: usize, end: usize, l4: usize) -> Option<(u32, u32)> {
    let p = start + l4;
    if p + 8 > end {
        return None;
    }
    // SAFETY: [p, p + 8) is inside the frame.
    unsafe { Some((u32::from_be(word(p)), u32::from_be(word(p + 4)))) }
}

// --- XDP side -------------------------------------------------------------------------

/// Marks the RST of `[start, end)` with its IP header at `l3` and TCP header at `l4`
/// (XDP, RST path only): one per-CPU lookup and five word stores into the next slot of
/// the ring, which overwrites the oldest mark.
#[inline(always)]
pub(crate) fn mark(start: usize, end: usize, seg: &Rst, ifindex: u32) {
    let (Some((fold, ttl)), Some((ports, seq))) = (
        frame_fold(start, end, seg.l3, seg.family),
        ports_seq(start, end, seg.l4),
    ) else {
        return;
    };
    let Some(ring) = MARK_RING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; XDP and the softirq-side programs do not nest on a CPU.
    let ring = unsafe { &mut *ring };
    let i = ring.next & MASK;
    ring.next = ring.next.wrapping_add(1);
    let Some(m) = ring.marks.get_mut(i as usize) else {
        return;
    };
    m.fold = fold;
    m.ports = ports;
    m.seq = seq;
    m.ifindex = ifindex;
    // ttl, family, sampled = 0, live = 1 in one store.
    let meta = u32::from_le_bytes([ttl, seg.family, 0, 1]);
    // SAFETY: the last four bytes of the mark, 4-byte aligned (repr(C), u32 fields).
    unsafe { core::ptr::write((&raw mut m.ttl).cast::<u32>(), meta) };
}

/// The last mark of this CPU was sampled (XDP, on the sampled path only).
#[inline(always)]
pub(crate) fn mark_sampled() {
    if let Some(ring) = MARK_RING.get_ptr_mut(0) {
        // SAFETY: as in `mark`.
        let ring = unsafe { &mut *ring };
        if let Some(m) = ring
            .marks
            .get_mut((ring.next.wrapping_sub(1) & MASK) as usize)
        {
            m.sampled = 1;
        }
    }
}

/// Learns the peer's TTL/hop limit from a SYN or SYN-ACK (XDP, handshake packets only):
/// the IP header at `l3`, the TCP header at `l4`. Not
/// inlined, its arguments in registers: the per-packet body of the XDP program stays as
/// it was.
#[inline(never)]
pub(crate) fn learn_ttl(start: usize, end: usize, l3: usize, l4: usize, family: u8) {
    let (Some((fold, ttl)), Some((ports, _))) = (
        frame_fold(start, end, l3, family),
        ports_seq(start, end, l4),
    ) else {
        return;
    };
    let conn = ConnKey {
        fold,
        ports,
        family,
        _pad0: 0,
        _pad1: 0,
    };
    // SAFETY: a map value read once.
    if PEER_TTL.get_ptr(conn).map(|t| unsafe { *t }) != Some(ttl) {
        let _ = PEER_TTL.insert(conn, ttl, 0);
    }
}

// --- the join ---------------------------------------------------------------------------

/// What a join matches a mark by.
struct Probe {
    fold: u32,
    /// Remote port << 16 | local port.
    ports: u32,
    seq: u32,
    /// 1: only a mark with `seq` matches; 0: `seq` is preferred, else the newest mark of
    /// the connection.
    exact: u32,
}

/// The slot of the live mark `p` names, newest first; [`MARKS`] for none. Not inlined:
/// its loop is verified once.
#[inline(never)]
fn find(ring: &MarkRing, p: &Probe) -> u32 {
    let mut fallback = MARKS;
    for k in 1..=MARKS {
        let i = ring.next.wrapping_sub(k) & MASK;
        let Some(m) = ring.marks.get(i as usize) else {
            break;
        };
        if m.live == 0 || m.fold != p.fold || m.ports != p.ports {
            continue;
        }
        if m.seq == p.seq {
            return i;
        }
        if p.exact == 0 && fallback == MARKS {
            fallback = i;
        }
    }
    fallback
}

/// Consumes mark `i` with `verdict`: counts it, raises the signals, samples it (every
/// accepted one; a challenged one when its wire sample was taken). Not inlined.
#[inline(never)]
fn settle(ring: &mut MarkRing, i: u32, verdict: u8) {
    if i >= MARKS {
        return;
    }
    let Some(m) = ring.marks.get_mut((i & MASK) as usize) else {
        return;
    };
    if m.live == 0 {
        return;
    }
    m.live = 0;
    let m: Mark = *m;
    bump(m.ifindex, m.family, KIND_VERDICT, verdict);
    let conn = ConnKey {
        fold: m.fold,
        ports: m.ports,
        family: m.family,
        _pad0: 0,
        _pad1: 0,
    };
    let mut suspect = 0u8;
    // SAFETY: a map value read once.
    let peer_ttl = PEER_TTL.get_ptr(conn).map(|t| unsafe { *t }).unwrap_or(0);
    if peer_ttl != 0 && peer_ttl != m.ttl {
        suspect |= 1 << SIGNAL_TTL;
        bump(m.ifindex, m.family, KIND_SIGNAL, SIGNAL_TTL);
    }
    let t = now();
    if seq_spray(&conn, m.seq, t) {
        suspect |= 1 << SIGNAL_SEQ_SPRAY;
        bump(m.ifindex, m.family, KIND_SIGNAL, SIGNAL_SEQ_SPRAY);
    }
    if verdict == VERDICT_ACCEPTED {
        let a = Accepted {
            ts_ns: t,
            ifindex: m.ifindex,
            seq: m.seq,
            ttl: m.ttl,
            peer_ttl,
            flagged: 0,
            _pad0: 0,
            _pad1: 0,
        };
        let _ = ACCEPTED.insert(conn, a, 0);
        if let Some(armed) = ALIVE_ARMED.get_ptr_mut(0) {
            // SAFETY: a map value; racing CPUs store values equally good.
            unsafe { *armed = t + ALIVE_WINDOW_NS };
        }
    }
    if verdict == VERDICT_ACCEPTED || m.sampled != 0 {
        emit(&m, verdict, suspect, peer_ttl, 0, t);
    }
}

/// `seq_spray`: a connection's RSTs within [`SPRAY_WINDOW_NS`] of its first one, with
/// at least [`SPRAY_THRESHOLD`] different sequence numbers.
#[inline(always)]
fn seq_spray(conn: &ConnKey, seq: u32, ts: u64) -> bool {
    if let Some(s) = SPRAY.get_ptr_mut(conn) {
        // SAFETY: a map value; concurrent updates from another CPU race benignly (a
        // count may be one short).
        let s = unsafe { &mut *s };
        if ts.wrapping_sub(s.first_ns) <= SPRAY_WINDOW_NS {
            if s.last_seq != seq {
                s.distinct += 1;
                s.last_seq = seq;
            }
            return s.distinct >= SPRAY_THRESHOLD;
        }
    }
    let s = SprayState {
        first_ns: ts,
        last_seq: seq,
        distinct: 1,
    };
    let _ = SPRAY.insert(conn, s, 0);
    false
}

/// Samples a verdict into the ring buffer.
#[inline(always)]
fn emit(m: &Mark, verdict: u8, suspect: u8, peer_ttl: u8, late: u8, ts: u64) {
    let flags = submit_flags(size_of::<VerdictEvent>() as u64 + 8);
    let Some(mut entry) = EVENTS.reserve::<VerdictEvent>(0) else {
        stat_add(Stat::TraceRingFull);
        return;
    };
    // SAFETY: the reservation is sizeof(VerdictEvent) bytes; every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EVENT_VERDICT;
    ev.verdict = verdict;
    ev.suspect = suspect;
    ev.family = m.family;
    ev.ttl = m.ttl;
    ev.peer_ttl = peer_ttl;
    ev.sampled = m.sampled;
    ev.late = late;
    ev.ifindex = m.ifindex;
    ev.fold = m.fold;
    ev.ports = m.ports;
    ev.seq = m.seq;
    ev.ts_ns = ts;
    entry.submit(flags);
    stat_add(Stat::VerdictSampled);
}

#[inline(always)]
fn ring() -> Option<&'static mut MarkRing> {
    let r = MARK_RING.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, see `mark`.
    Some(unsafe { &mut *r })
}

// --- tcp:tcp_receive_reset ------------------------------------------------------------

/// Called by `rstmon_receive_reset`: the accepted verdict of the mark of the socket's
/// connection, preferring the one whose sequence number is `rcv_nxt` (the one
/// tcp_validate_incoming accepts). Not inlined: its frame is its own, small.
#[inline(never)]
pub(crate) fn on_receive_reset(sk: u64) {
    let o = offsets();
    let Some(p) = sock_probe(sk, &o) else {
        return;
    };
    let Some(r) = ring() else {
        return;
    };
    let i = find(r, &p);
    settle(r, i, VERDICT_ACCEPTED);
}

#[inline(always)]
fn sock_probe(sk: u64, o: &TraceOffsets) -> Option<Probe> {
    let af: u16 = kread(sk, o.sk_family)?;
    let fold = if af == AF_INET6 {
        let s: [u32; 4] = kread(sk, o.sk_v6_rcv_saddr)?;
        let d: [u32; 4] = kread(sk, o.sk_v6_daddr)?;
        s[0] ^ s[1] ^ s[2] ^ s[3] ^ d[0] ^ d[1] ^ d[2] ^ d[3]
    } else {
        kread::<u32>(sk, o.inet_saddr)? ^ kread::<u32>(sk, o.sk_daddr)?
    };
    let local = u16::from_be(kread(sk, o.inet_sport)?) as u32;
    let remote = u16::from_be(kread(sk, o.sk_dport)?) as u32;
    Some(Probe {
        fold,
        ports: (remote << 16) | local,
        seq: kread::<u32>(sk, o.tp_rcv_nxt).unwrap_or(0),
        exact: 0,
    })
}

// --- skb:kfree_skb ------------------------------------------------------------------------

/// A segment's IP and TCP header fields, read from an skb.
struct SkbSegment {
    family: u8,
    fold: u32,
    /// Source port << 16 | destination port.
    ports: u32,
    seq: u32,
    flags: u8,
}

#[inline(always)]
fn skb_segment(skb: u64, o: &TraceOffsets) -> Option<SkbSegment> {
    let head: u64 = kread(skb, o.skb_head)?;
    let nh: u16 = kread(skb, o.skb_network_header)?;
    let th: u16 = kread(skb, o.skb_transport_header)?;
    if head == 0 || nh == u16::MAX || th == u16::MAX {
        return None;
    }
    let ip = head + nh as u64;
    let ver = kread::<u8>(ip, 0)? >> 4;
    let (family, fold) = if ver == 6 {
        let a: [u32; 8] = kread(ip, 8)?;
        (
            FAMILY_IPV6,
            a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7],
        )
    } else if ver == 4 {
        let a: [u32; 2] = kread(ip, 12)?;
        (FAMILY_IPV4, a[0] ^ a[1])
    } else {
        return None;
    };
    let t: [u8; 14] = kread(head, th)?;
    Some(SkbSegment {
        family,
        fold,
        ports: u32::from_be_bytes([t[0], t[1], t[2], t[3]]),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
    })
}

/// `kfree_skb(skb, location, reason[, rx_sk])` (attached only where the reason exists,
/// 5.17+). The reason is compared first: every other drop of the host returns there.
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn rstmon_kfree_skb(ctx: RawTracePointContext) -> u32 {
    let v = voff();
    if v.kfree_args < 3 {
        return 0;
    }
    let reason = ctx.arg::<u64>(2) as u32;
    if reason == v.reason_tcp_reset {
        // Frozen at load: without the argument (before 6.12) the verifier never sees
        // the read.
        let rx_sk = if v.kfree_args >= 4 {
            ctx.arg::<u64>(3)
        } else {
            0
        };
        challenged(ctx.arg::<u64>(0), rx_sk);
    } else if reason == v.reason_no_socket {
        alive_after_reset(ctx.arg::<u64>(0));
    }
    0
}

/// An RST dropped with `TCP_RESET`: challenged, unless the socket that dropped it was a
/// listener or in SYN_SENT (the same reason, without a challenge; known from `rx_sk`).
#[inline(never)]
fn challenged(skb: u64, rx_sk: u64) {
    let o = offsets();
    if rx_sk != 0
        && matches!(
            kread::<u8>(rx_sk, o.sk_state),
            Some(state::LISTEN | state::SYN_SENT)
        )
    {
        return;
    }
    let Some(seg) = skb_segment(skb, &o) else {
        return;
    };
    if seg.flags & TCP_RST == 0 {
        return;
    }
    let p = Probe {
        fold: seg.fold,
        ports: seg.ports,
        seq: seg.seq,
        exact: 1,
    };
    let Some(r) = ring() else {
        return;
    };
    let i = find(r, &p);
    settle(r, i, VERDICT_CHALLENGED);
}

/// A segment for no socket (not an RST, not a SYN) on a connection whose RST a socket
/// accepted within [`ALIVE_WINDOW_NS`]: the real peer is alive; raised once.
#[inline(never)]
fn alive_after_reset(skb: u64) {
    let Some(armed) = ALIVE_ARMED.get(0) else {
        return;
    };
    let armed = *armed;
    if armed == 0 {
        return;
    }
    let t = now();
    if t > armed {
        return;
    }
    let o = offsets();
    let Some(seg) = skb_segment(skb, &o) else {
        return;
    };
    if seg.flags & (TCP_RST | TCP_SYN) != 0 {
        return;
    }
    let conn = ConnKey {
        fold: seg.fold,
        ports: seg.ports,
        family: seg.family,
        _pad0: 0,
        _pad1: 0,
    };
    let Some(a) = ACCEPTED.get_ptr_mut(conn) else {
        return;
    };
    // SAFETY: a map value; a race with another CPU may at worst flag twice.
    let a = unsafe { &mut *a };
    if a.flagged != 0 || t.wrapping_sub(a.ts_ns) > ALIVE_WINDOW_NS {
        return;
    }
    a.flagged = 1;
    bump(a.ifindex, seg.family, KIND_SIGNAL, SIGNAL_ALIVE_AFTER_RESET);
    let m = Mark {
        fold: seg.fold,
        ports: seg.ports,
        seq: a.seq,
        ifindex: a.ifindex,
        ttl: a.ttl,
        family: seg.family,
        sampled: 0,
        live: 0,
    };
    emit(
        &m,
        VERDICT_ACCEPTED,
        1 << SIGNAL_ALIVE_AFTER_RESET,
        a.peer_ttl,
        1,
        t,
    );
}
