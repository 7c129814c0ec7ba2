//! `rstmon_send_reset` and `rstmon_receive_reset`, raw tracepoints on `tcp_send_reset`
//! and `tcp_receive_reset`: count by classification key, exactly, and sample.
//!
//! A raw tracepoint gets the tracepoint's C arguments (`TP_PROTO`), not the record a
//! classic tracepoint builds, so the kernel formats nothing for it and rstmon needs no
//! tracefs. What the record used to hold is read here, with `bpf_probe_read_kernel` at
//! the offsets user space found in BTF ([`TraceOffsets`]), the way the kernel's
//! `TP_fast_assign` (include/trace/events/tcp.h) fills it:
//!
//! * `tcp_send_reset(sk, skb[, reason])`: state `sk ? sk->sk_state : 0`; addresses and
//!   ports from the socket (local first) when it is a full socket other than a
//!   listener, else from the triggering segment's IP and TCP headers, reversed (local =
//!   the segment's destination) — the kernel's own record shows a listener's zero peer;
//!   rstmon shows the connection the reset belongs to;
//! * `tcp_receive_reset(sk)`: addresses and ports from the socket.
//!
//! `rstmon_send_reset` also announces each passive reset (one answering a segment) in
//! `PENDING_RESETS` (the RST's own addresses and ports, as it will leave), so that the TC
//! egress program knows it for the stack's when it leaves and never counts it again.
//!
//! Their rare failure paths (a kernel read that fails, a layout rstmon does not expect)
//! log through aya-log at debug level, target `rstmon::ebpf`. The level is a load-time
//! constant, off unless `--log` enables that target, so the verifier removes the calls.

use core::{
    ffi::c_void,
    ptr::{read_unaligned, read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::debug;
use rst_common::{
    AF_INET, AF_INET6, EVENT_RECV, EVENT_SEND, FAMILY_IPV4, FAMILY_IPV6, NO_TRIGGER, OFF_NONE,
    ORIGIN_SOCKET, ORIGIN_STATELESS, ORIGIN_UNKNOWN, PendingKey, PendingReset, REASON_UNAVAILABLE,
    RecvKey, SEND_LINGER0, SEND_TRIG_DATA, SIDE_RECEIVED, SIDE_SENT, SKB_WINDOW_MAX, SendKey, Stat,
    TCP_WINDOW_MAX, TraceEvent, TraceOffsets, recv_key_bits, send_key_bits, state,
};

use crate::{
    EGRESS_ACTIVE, EVENTS, PENDING_RESETS, RECV_COUNTERS, SEND_COUNTERS, TRACE_OFFSETS,
    TRACE_SAMPLES_PER_SEC, WINDOW_TRACE, sock,
    util::{atomic_add, copy_words, count, stat_add, submit_flags, zero_words},
    wire::take_sample_at,
};

#[inline(always)]
pub(crate) fn offsets() -> TraceOffsets {
    // SAFETY: a plain read of a load-time constant.
    unsafe { read_volatile(&TRACE_OFFSETS) }
}

#[inline(always)]
pub(crate) fn kread<T>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == OFF_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// Reads one bit at an absolute bit offset of a kernel object.
#[inline(always)]
fn kbit(base: u64, bit: u16) -> Option<bool> {
    if bit == OFF_NONE {
        return None;
    }
    kread::<u8>(base, bit / 8).map(|b| (b >> (bit % 8)) & 1 == 1)
}

#[inline(always)]
fn family_of(af: u16) -> u8 {
    match af {
        AF_INET => FAMILY_IPV4,
        AF_INET6 => FAMILY_IPV6,
        _ => 0,
    }
}

/// Reads `len` bytes at `base + off` straight into `dst` (the reserved sample), false
/// when unavailable or unreadable (the helper zeroes `dst` then).
#[inline(always)]
fn kread_into(dst: *mut u8, len: u32, base: u64, off: u16) -> bool {
    if base == 0 || off == OFF_NONE {
        return false;
    }
    // SAFETY: `dst` is valid for `len` bytes (a field of the reservation); the helper
    // checks the source address.
    unsafe {
        generated::bpf_probe_read_kernel(dst.cast(), len, (base + off as u64) as *const c_void) == 0
    }
}

/// Zeroes bytes `from..16` of a 16-byte address field with word stores (`from` is 0 or
/// 4): a plain `= [0; 16]` becomes a call to a byte-wise memset on this target.
#[inline(always)]
fn zero_from(p: *mut u8, from: usize) {
    // SAFETY: `p` is an 8-byte aligned 16-byte field of the reservation (`TraceEvent`
    // is 8-byte aligned and its addresses sit at offsets 24 and 40).
    unsafe {
        if from == 0 {
            write_volatile(p.cast::<u32>(), 0);
        }
        write_volatile(p.add(4).cast::<u32>(), 0);
        write_volatile(p.add(8).cast::<u64>(), 0);
    }
}

/// What a [`Source`] reads from.
const SRC_NONE: u8 = 0;
const SRC_SOCK: u8 = 1;
const SRC_SEGMENT: u8 = 2;

/// Where a sample's addresses and ports come from. A plain struct whose every field is
/// always written (not an enum): 5.10's verifier refuses a program that reads stack it
/// never wrote, which copying an enum's unused payload does.
///
/// * [`SRC_SOCK`]: `TP_STORE_ADDR_PORTS`/`TP_STORE_ADDRS` of the socket at `base`: its
///   local address and port (`inet_saddr`, `inet_sport`), then the remote ones
///   (`skc_daddr`, `skc_dport`); `sk_v6_rcv_saddr`/`sk_v6_daddr` for an AF_INET6 socket
///   (`v6`; v4-mapped ones included).
/// * [`SRC_SEGMENT`]: `TP_STORE_ADDR_PORTS_SKB(skb, th, entry->daddr, entry->saddr)`:
///   the trigger segment's addresses and ports reversed, so that local (its
///   destination) comes first; `base` is its IP header, `sport`/`dport` its own ports.
/// * [`SRC_NONE`]: nothing to read: zeros.
#[derive(Clone, Copy)]
struct Source {
    kind: u8,
    v6: bool,
    sport: u16,
    dport: u16,
    base: u64,
}

impl Source {
    const NONE: Source = Source {
        kind: SRC_NONE,
        v6: false,
        sport: 0,
        dport: 0,
        base: 0,
    };

    #[inline(always)]
    fn sock(sk: u64, af: u16) -> Source {
        Source {
            kind: SRC_SOCK,
            v6: af == AF_INET6,
            sport: 0,
            dport: 0,
            base: sk,
        }
    }
}

/// The segment that triggered a reset, in the per-CPU scratch value (the send handler
/// has no stack to spare): its TCP flags, whether it carries payload, where its
/// headers start (`skb->head`), its IP header (`skb->network_header`, [`u16::MAX`]
/// when unset) and IP version (0 when not read yet) and its ports (host order).
/// `valid` 0: no segment, or one that could not be read; every field is written either
/// way.
#[repr(C)]
pub(crate) struct Trigger {
    pub(crate) head: u64,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) nh: u16,
    pub(crate) flags: u8,
    pub(crate) payload: u8,
    pub(crate) valid: u8,
    pub(crate) ver: u8,
    pub(crate) _pad: [u8; 6],
}

/// The bytes of `win` at `at` (masked into the window: the window is the first field
/// of the scratch value, so a read that runs past its end stays inside the value).
#[inline(always)]
pub(crate) fn win_read<T>(win: &[u64; WIN_WORDS], at: usize) -> T {
    // SAFETY: `at` is masked below the window's size and the scratch value extends
    // past the window by more than any `T` read here (see `sock::Scratch`).
    unsafe {
        read_unaligned(
            win.as_ptr()
                .cast::<u8>()
                .add(at & (WIN_WORDS * 8 - 1))
                .cast::<T>(),
        )
    }
}

/// Words of the scratch window: the largest window read into it
/// ([`TCP_WINDOW_MAX`] bytes; [`SKB_WINDOW_MAX`] is smaller).
pub(crate) const WIN_WORDS: usize = TCP_WINDOW_MAX as usize / 8;
const _: () = assert!(WIN_WORDS.is_power_of_two() && SKB_WINDOW_MAX <= TCP_WINDOW_MAX);

/// Reads `len` bytes of the kernel object at `base + off` into `win` (at most its size).
#[inline(always)]
pub(crate) fn read_window(win: &mut [u64; WIN_WORDS], base: u64, off: u16, len: u16) -> bool {
    let len = (len as u32).min(WIN_WORDS as u32 * 8);
    // SAFETY: `win` is WIN_WORDS * 8 writable bytes; the helper checks the source.
    unsafe {
        generated::bpf_probe_read_kernel(
            win.as_mut_ptr().cast(),
            len,
            (base + off as u64) as *const c_void,
        ) == 0
    }
}

/// `skb->head`, `->transport_header`, `->network_header`, `->data` and `->len`: one read
/// of the window that holds them where the kernel's layout allows (TraceOffsets::
/// skb_win), else one read each. `None` when head or the transport header cannot be
/// read; an unreadable network header is [`u16::MAX`] (unset), unreadable data 0.
#[inline(always)]
fn skb_fields(
    skb: u64,
    o: &TraceOffsets,
    win: &mut [u64; WIN_WORDS],
) -> Option<(u64, u16, u16, u64, u32)> {
    if o.skb_win != OFF_NONE {
        if !read_window(win, skb, o.skb_win, o.skb_win_len.min(SKB_WINDOW_MAX)) {
            return None;
        }
        let at = |off: u16| off.wrapping_sub(o.skb_win) as usize;
        return Some((
            win_read::<u64>(win, at(o.skb_head)),
            win_read::<u16>(win, at(o.skb_transport_header)),
            win_read::<u16>(win, at(o.skb_network_header)),
            win_read::<u64>(win, at(o.skb_data)),
            win_read::<u32>(win, at(o.skb_len)),
        ));
    }
    let head = kread::<u64>(skb, o.skb_head)?;
    let th = kread::<u16>(skb, o.skb_transport_header)?;
    Some((
        head,
        th,
        kread::<u16>(skb, o.skb_network_header).unwrap_or(u16::MAX),
        kread::<u64>(skb, o.skb_data).unwrap_or(0),
        kread::<u32>(skb, o.skb_len).unwrap_or(0),
    ))
}

/// Reads the trigger segment's TCP header (ports, flags, data offset) and whether it
/// carries payload (from `skb->data`/`skb->len`) into `x.seg`; the IP header too, in
/// the same read, when it lies just before the TCP header (its version, for
/// [`segment_source`]). False (and the trigger invalid) when the skb has no transport
/// header or cannot be read.
#[inline(always)]
fn skb_segment(
    ctx: &RawTracePointContext,
    skb: u64,
    o: &TraceOffsets,
    x: &mut sock::Scratch,
) -> bool {
    let t = &mut x.seg;
    // SAFETY: a whole Trigger (8-aligned, 24 bytes).
    unsafe { zero_words(t) };
    t.nh = u16::MAX;
    let Some((head, th, nh, data, len)) = skb_fields(skb, o, &mut x.win) else {
        stat_add(Stat::ReadErrors);
        debug!(ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read skb {:x} head/transport_header", skb);
        return false;
    };
    if th == u16::MAX || head == 0 {
        return false;
    }
    let th_addr = head + th as u64;
    // The IP header and the TCP header's first 14 bytes in one read when they are
    // adjacent and fit the window (and windows are on: RSTMON_TEST_NO_SKB_WINDOW takes
    // the other path too); else the TCP header alone.
    let ip_len = if o.skb_win != OFF_NONE && nh != u16::MAX && nh <= th {
        (th - nh) as u32
    } else {
        u32::MAX
    };
    // Compared without an addition, which would wrap for u32::MAX.
    let (hdr, ver) = if ip_len <= (SKB_WINDOW_MAX - 14) as u32 {
        if !read_window(&mut x.win, head, nh, ip_len as u16 + 14) {
            stat_add(Stat::ReadErrors);
            debug!(ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the trigger's headers at {:x}", head + nh as u64);
            return false;
        }
        (
            win_read::<[u8; 14]>(&x.win, ip_len as usize),
            win_read::<u8>(&x.win, 0) >> 4,
        )
    } else {
        // SAFETY: bpf_probe_read_kernel checks the address.
        let Ok(hdr) = (unsafe { bpf_probe_read_kernel(th_addr as *const [u8; 14]) }) else {
            stat_add(Stat::ReadErrors);
            debug!(ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the trigger's TCP header at {:x}", th_addr);
            return false;
        };
        (hdr, 0)
    };
    let doff = ((hdr[12] >> 4) as u64) * 4;
    // skb->len counts from skb->data, which may sit before or at the TCP header.
    let payload = data != 0 && data + len as u64 > th_addr + doff;
    let t = &mut x.seg;
    t.head = head;
    t.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
    t.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
    t.nh = nh;
    t.flags = hdr[13];
    t.payload = payload as u8;
    t.ver = ver;
    t.valid = 1;
    true
}

/// The addresses of a reset without a full socket, from the trigger's IP header (its
/// version, as the kernel decides); [`Source::NONE`] when it cannot be read.
#[inline(always)]
fn segment_source(t: &Trigger) -> Source {
    if t.nh == u16::MAX {
        return Source::NONE;
    }
    let ip = t.head + t.nh as u64;
    let ver = if t.ver != 0 {
        t.ver
    } else {
        match kread::<u8>(ip, 0) {
            Some(v) => v >> 4,
            None => return Source::NONE,
        }
    };
    Source {
        kind: SRC_SEGMENT,
        v6: ver == 6,
        sport: t.sport,
        dport: t.dport,
        base: ip,
    }
}

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn rstmon_send_reset(ctx: RawTracePointContext) -> u32 {
    // A per-CPU array's only entry: the lookup cannot fail.
    let Some(x) = sock::scratch() else {
        stat_add(Stat::ReadErrors);
        return 0;
    };
    let o = offsets();
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    // Frozen at load: on a kernel whose tcp_send_reset has two arguments the verifier
    // never sees this read (it would refuse the attach otherwise).
    let reason = if o.send_reset_args >= 3 {
        ctx.arg::<u64>(2) as u32
    } else {
        REASON_UNAVAILABLE
    };
    let state = if sk != 0 {
        match kread::<u8>(sk, o.sk_state) {
            Some(s) => s,
            None => {
                stat_add(Stat::ReadErrors);
                debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read sk_state of sk {:x}", sk);
                0
            }
        }
    } else {
        0
    };
    let trig_flags = if skb == 0 {
        x.seg.valid = 0;
        NO_TRIGGER
    } else if skb_segment(&ctx, skb, &o, x) {
        x.seg.flags
    } else {
        // Unreadable: flags 0.
        0
    };
    let seg = &x.seg;

    // sk_fullsock(): not a time-wait or request mini-socket. Only a full socket has
    // sk_flags/sk_lingertime (a mini-socket's memory ends before them) and gives the
    // record its addresses.
    let full = sk != 0 && state != state::TIME_WAIT && state != state::NEW_SYN_RECV;
    let mut bits = if seg.valid != 0 && seg.payload != 0 {
        SEND_TRIG_DATA
    } else {
        0
    };
    let (af, src) = if full {
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
        // A listener's peer is 0.0.0.0:0: the reset answers a segment (an ACK that no
        // request matches), whose addresses are the connection's.
        let trigger = if seg.valid != 0 && state == state::LISTEN {
            segment_source(seg)
        } else {
            Source::NONE
        };
        if trigger.kind != SRC_NONE {
            (segment_af(&trigger), trigger)
        } else {
            match kread::<u16>(sk, o.sk_family) {
                Some(af) => (af, Source::sock(sk, af)),
                None => {
                    stat_add(Stat::ReadErrors);
                    debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the family of sk {:x}", sk);
                    (0, Source::NONE)
                }
            }
        }
    } else if seg.valid != 0 {
        let src = segment_source(seg);
        if src.kind == SRC_NONE {
            stat_add(Stat::ReadErrors);
            debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the IP header of skb {:x}", skb);
            (0, src)
        } else {
            (segment_af(&src), src)
        }
    } else {
        (0, Source::NONE)
    };

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
    // Only passive resets are announced: an active one (no trigger) has already left
    // (tcp_send_active_reset fires the tracepoint after the send), and the egress
    // program knows it by its socket. Nothing is announced while no egress program
    // reads the announcements: the LRU insert is most of this handler's cost.
    if skb != 0 && EGRESS_ACTIVE.get(0).is_some_and(|a| *a != 0) {
        announce(src, &o, &mut x.pending);
    }
    let start = sock::attribute_send(&mut x.attr, sk, skb, state, full, &o);
    if full {
        sock::conn_info(&mut x.conn, &mut x.win, sk, state, start, &o);
    } else {
        sock::no_conn(&mut x.conn);
    }
    sock::account(SIDE_SENT, send_key_bits(key), &x.attr, &x.conn);
    if !emit(EVENT_SEND, key, src, x, &o) {
        stat_add(Stat::ReadErrors);
        debug!(&ctx, target: "rstmon::ebpf", "tcp_send_reset: cannot read the addresses of sk {:x} / skb {:x}", sk, skb);
    }
    0
}

/// The address family of a segment source.
#[inline(always)]
fn segment_af(src: &Source) -> u16 {
    if src.v6 { AF_INET6 } else { AF_INET }
}

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn rstmon_receive_reset(ctx: RawTracePointContext) -> u32 {
    let o = offsets();
    let sk: u64 = ctx.arg(0);
    let (state, af) = match (kread::<u8>(sk, o.sk_state), kread::<u16>(sk, o.sk_family)) {
        (Some(s), Some(af)) => (s, af),
        _ => {
            stat_add(Stat::ReadErrors);
            debug!(&ctx, target: "rstmon::ebpf", "tcp_receive_reset: cannot read sk_state/family of sk {:x}", sk);
            (0, 0)
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
    crate::verdict::on_receive_reset(sk);
    let src = if af != 0 {
        Source::sock(sk, af)
    } else {
        Source::NONE
    };
    let Some(x) = sock::scratch() else {
        return 0;
    };
    let start = sock::attribute_recv(&mut x.attr, sk, &o);
    sock::conn_info(&mut x.conn, &mut x.win, sk, state, start, &o);
    sock::account(SIDE_RECEIVED, recv_key_bits(key), &x.attr, &x.conn);
    if !emit(EVENT_RECV, key, src, x, &o) {
        stat_add(Stat::ReadErrors);
        debug!(&ctx, target: "rstmon::ebpf", "tcp_receive_reset: cannot read the addresses of sk {:x}", sk);
    }
    0
}

/// Whether a 16-byte address (two words in memory order) is IPv4-mapped
/// (`::ffff:a.b.c.d`).
#[inline(always)]
fn v4_mapped(w0: u64, w1: u64) -> bool {
    w0 == 0 && w1 as u32 == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// Announces the reset about to leave in `PENDING_RESETS`, keyed by its addresses and
/// ports as the RST will carry them (local = source), v4-mapped addresses as IPv4 (what
/// the wire shows). Nothing is announced when they cannot be read. The key is built in
/// the per-CPU scratch value: with the socket's owner and connection context the send
/// handler has no stack to spare.
#[inline(always)]
fn announce(src: Source, o: &TraceOffsets, key: &mut PendingKey) {
    // SAFETY: a whole PendingKey (8-aligned, 40 bytes).
    unsafe { zero_words(key) };
    let s = (&raw mut key.saddr0).cast::<u8>();
    let d = (&raw mut key.daddr0).cast::<u8>();
    let ok = match src.kind {
        SRC_SOCK => {
            let sk = src.base;
            let (Some(sp), Some(dp)) =
                (kread::<u16>(sk, o.inet_sport), kread::<u16>(sk, o.sk_dport))
            else {
                return;
            };
            key.sport = u16::from_be(sp);
            key.dport = u16::from_be(dp);
            if src.v6 {
                key.family = FAMILY_IPV6;
                kread_into(s, 16, sk, o.sk_v6_rcv_saddr) & kread_into(d, 16, sk, o.sk_v6_daddr)
            } else {
                key.family = FAMILY_IPV4;
                kread_into(s, 4, sk, o.inet_saddr) & kread_into(d, 4, sk, o.sk_daddr)
            }
        }
        SRC_SEGMENT => {
            let ip = src.base;
            key.sport = src.dport;
            key.dport = src.sport;
            if src.v6 {
                key.family = FAMILY_IPV6;
                kread_into(d, 16, ip, 8) & kread_into(s, 16, ip, 24)
            } else {
                key.family = FAMILY_IPV4;
                kread_into(d, 4, ip, 12) & kread_into(s, 4, ip, 16)
            }
        }
        _ => return,
    };
    if !ok {
        return;
    }
    if key.family == FAMILY_IPV6
        && v4_mapped(key.saddr0, key.saddr1)
        && v4_mapped(key.daddr0, key.daddr1)
    {
        key.family = FAMILY_IPV4;
        key.saddr0 = key.saddr1 >> 32;
        key.saddr1 = 0;
        key.daddr0 = key.daddr1 >> 32;
        key.daddr1 = 0;
    }
    // The maps read the key where it is, in the scratch value.
    let key: &PendingKey = key;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if PENDING_RESETS.get_ptr_mut(key).is_none() {
        let v = PendingReset {
            count: 1,
            ts_ns: now,
        };
        // NOEXIST: another CPU announcing the same RST at the same moment must not
        // overwrite its count; then add to the entry it made.
        if PENDING_RESETS.insert(key, v, BPF_NOEXIST as u64).is_ok() {
            return;
        }
    }
    // A failed insert and lookup (the map could not make room) leaves the reset
    // unannounced.
    if let Some(p) = PENDING_RESETS.get_ptr_mut(key) {
        // SAFETY: a live map value; the count is changed atomically only.
        unsafe {
            atomic_add(&raw mut (*p).count, 1);
            (*p).ts_ns = now;
        }
    }
}

// `emit` writes `kind` with its padding as one word and copies `attr` and `conn` word by
// word: they sit at 8-byte aligned offsets of the 8-byte aligned reservation.
const _: () = {
    use core::mem::{align_of, offset_of};
    use rst_common::{RecvKey, SendKey, TraceEvent};
    assert!(align_of::<TraceEvent<SendKey>>() == 8 && align_of::<TraceEvent<RecvKey>>() == 8);
    assert!(offset_of!(TraceEvent<SendKey>, attr) % 8 == 0);
    assert!(offset_of!(TraceEvent<SendKey>, conn) % 8 == 0);
    assert!(offset_of!(TraceEvent<RecvKey>, attr) % 8 == 0);
    assert!(offset_of!(TraceEvent<RecvKey>, conn) % 8 == 0);
};

/// Samples a sent or received reset into the ring buffer under the trace sampler's
/// rate limit, reading its addresses and ports from `src` straight into the reservation
/// (nothing is read when the sample is not taken). False when a read failed (its fields
/// are then zero).
#[inline(always)]
fn emit<K: 'static>(kind: u8, key: K, src: Source, x: &sock::Scratch, o: &TraceOffsets) -> bool {
    // SAFETY: a plain read of a load-time constant.
    let rate = unsafe { read_volatile(&TRACE_SAMPLES_PER_SEC) };
    if rate == 0 {
        return true;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !take_sample_at(rate, WINDOW_TRACE, now) {
        stat_add(Stat::TraceRateLimited);
        return true;
    }
    let flags = submit_flags(size_of::<TraceEvent<K>>().next_multiple_of(8) as u64 + 8);
    let Some(mut entry) = EVENTS.reserve::<TraceEvent<K>>(0) else {
        stat_add(Stat::TraceRingFull);
        return true;
    };
    // SAFETY: the reservation is sizeof(TraceEvent<K>) bytes; every field is written.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: `kind` and `_pad0` are the first 8 bytes of the 8-aligned reservation
    // (little-endian: `kind` is the low byte).
    unsafe { write_volatile((&raw mut ev.kind).cast::<u64>(), kind as u64) };
    ev.key = key;
    ev.ts_ns = now;
    ev._pad1 = [0; 4];
    // SAFETY: 8-aligned fields of the reservation and of the scratch value.
    unsafe {
        copy_words(&raw mut ev.attr, &raw const x.attr);
        copy_words(&raw mut ev.conn, &raw const x.conn);
    }
    let (s, d) = (ev.saddr.as_mut_ptr(), ev.daddr.as_mut_ptr());
    // An IPv6 read fills all 16 bytes of an address (zeroes them when it fails); an
    // IPv4 one the first 4: the rest is zeroed here.
    if !src.v6 {
        let from = if src.kind == SRC_NONE { 0 } else { 4 };
        zero_from(s, from);
        zero_from(d, from);
    }
    let ok = match src.kind {
        SRC_SOCK => {
            let sk = src.base;
            let addrs = if src.v6 {
                kread_into(s, 16, sk, o.sk_v6_rcv_saddr) & kread_into(d, 16, sk, o.sk_v6_daddr)
            } else {
                kread_into(s, 4, sk, o.inet_saddr) & kread_into(d, 4, sk, o.sk_daddr)
            };
            match (kread::<u16>(sk, o.inet_sport), kread::<u16>(sk, o.sk_dport)) {
                (Some(sp), Some(dp)) => {
                    ev.sport = u16::from_be(sp);
                    ev.dport = u16::from_be(dp);
                    addrs
                }
                _ => {
                    ev.sport = 0;
                    ev.dport = 0;
                    false
                }
            }
        }
        SRC_SEGMENT => {
            let ip = src.base;
            ev.sport = src.dport;
            ev.dport = src.sport;
            if src.v6 {
                // saddr at 8, daddr at 24.
                kread_into(d, 16, ip, 8) & kread_into(s, 16, ip, 24)
            } else {
                // saddr at 12, daddr at 16.
                kread_into(d, 4, ip, 12) & kread_into(s, 4, ip, 16)
            }
        }
        _ => {
            ev.sport = 0;
            ev.dport = 0;
            true
        }
    };
    entry.submit(flags);
    stat_add(Stat::TraceSampled);
    ok
}
