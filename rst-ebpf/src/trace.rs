//! `rstmon_send_reset` (`tcp:tcp_send_reset`) and `rstmon_receive_reset`
//! (`tcp:tcp_receive_reset`): count by classification key, exactly, and sample.
//!
//! Their rare failure paths (a kernel read that fails, a layout rstmon does not expect)
//! log through aya-log at debug level, target `rstmon::ebpf`. The level is a load-time
//! constant, off unless `--log` enables that target, so the verifier removes the calls.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use rst_common::{
    AF_INET, AF_INET6, EVENT_RECV, EVENT_SEND, FAMILY_IPV4, FAMILY_IPV6, NO_TRIGGER, OFF_NONE,
    ORIGIN_SOCKET, ORIGIN_STATELESS, ORIGIN_UNKNOWN, REASON_UNAVAILABLE, RecvKey, SEND_LINGER0,
    SEND_TRIG_DATA, SendKey, Stat, TraceEvent, TraceOffsets, state,
};

use crate::{
    EVENTS, RECV_COUNTERS, SEND_COUNTERS, TRACE_OFFSETS,
    util::{count, stat_add, submit_flags},
};

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
fn skb_tcp_info(ctx: &TracePointContext, skb: u64, o: &TraceOffsets) -> (u8, bool) {
    let (Some(head), Some(th)) = (
        kread::<u64>(skb, o.skb_head),
        kread::<u16>(skb, o.skb_transport_header),
    ) else {
        stat_add(Stat::ReadErrors);
        debug!(ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read skb {:x} head/transport_header", skb);
        return (0, false);
    };
    if th == u16::MAX || head == 0 {
        return (0, false);
    }
    let th_addr = head + th as u64;
    // SAFETY: bpf_probe_read_kernel checks the address.
    let Ok(hdr) = (unsafe { bpf_probe_read_kernel((th_addr + 12) as *const [u8; 2]) }) else {
        stat_add(Stat::ReadErrors);
        debug!(ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the trigger's TCP header at {:x}", th_addr);
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
        skb_tcp_info(&ctx, skb, &o)
    } else {
        (NO_TRIGGER, false)
    };
    // sk_flags/sk_lingertime live only in a full socket: not in a time-wait or
    // request mini-socket, whose memory ends before them.
    let mut bits = if trig_data { SEND_TRIG_DATA } else { 0 };
    if sk != 0 && state != state::TIME_WAIT && state != state::NEW_SYN_RECV {
        match (
            kread::<u64>(sk, o.sk_flags),
            kread::<i64>(sk, o.sk_lingertime),
        ) {
            (Some(flags), Some(lt)) => {
                if o.sock_linger_bit < 64 && (flags >> o.sock_linger_bit) & 1 == 1 && lt == 0 {
                    bits |= SEND_LINGER0;
                }
            }
            _ => {
                stat_add(Stat::ReadErrors);
                debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read sk_flags/sk_lingertime of sk {:x}", sk);
            }
        }
    }
    let family = family_of(af);
    if family == 0 {
        debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: unexpected address family {} (layout mismatch?)", af);
    }
    let key = SendKey {
        reason,
        state,
        family,
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
        stat_add(Stat::TraceRingFull);
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
    stat_add(Stat::TraceSampled);
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
            stat_add(Stat::ReadErrors);
            debug!(&ctx, target: "rstmon::ebpf", "tcp_receive_reset: cannot read sk_state of sk {:x}", sk);
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
    let family = family_of(af);
    if family == 0 {
        debug!(&ctx, target: "rstmon::ebpf", "tcp_receive_reset: unexpected address family {} (layout mismatch?)", af);
    }
    let key = RecvKey {
        state,
        family,
        origin,
        _pad: [0; 5],
    };
    count(&RECV_COUNTERS, &key);
    emit(EVENT_RECV, key, &saddr, &daddr, sport, dport);
    0
}
