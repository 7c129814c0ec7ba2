//! Who a reset belongs to and what its connection looked like, read from the socket
//! itself (never from `current` in softirq, which is whatever task happened to run):
//!
//! * the owner: cgroup v2 id (`sk_cgrp_data.cgroup->kn->id`), `sk_uid`, the network
//!   namespace (`skc_net->ns.inum`; for a reset without a socket, the namespace of the
//!   device the trigger arrived on, `skb->dev->nd_net`);
//! * the process, only where it is known exactly: the task that made the reset in a
//!   system call (an active reset while a task holds the socket lock), else the task
//!   that called connect() or listen(), recorded by `rstmon_sock_set_state`;
//! * the connection context from `tcp_sock` ([`ConnInfo`]);
//!
//! and the exact per-workload counters and the idle/age histograms.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use rst_common::{
    AGE_BOUNDS_MS, AGE_UNKNOWN, Attribution, ConnInfo, ConnStart, HIST_AGE, HIST_BOUNDS, HIST_IDLE,
    HIST_SUM, IDLE_BOUNDS_MS, IPPROTO_TCP, ListenInfo, ListenKey, OFF_NONE, PID_CONNECT,
    PID_LISTEN, PID_NONE, PID_RESET, Stat, TraceOffsets, UID_NONE, WorkloadKey, hist_index, state,
};

use crate::{
    CONNS, HISTOGRAMS, LISTENERS, SCRATCH, SCRATCH_WORDS, WORKLOAD_COUNTERS,
    trace::{WIN_WORDS, kread, offsets, read_window, win_read},
    util::{array_add, array_add_n, copy_words, stat_add, try_count, zero_words},
};

/// The network namespace (inode number) of a `struct net *`, 0 when unreadable.
#[inline(always)]
fn net_inum(net: u64, o: &TraceOffsets) -> u32 {
    kread::<u32>(net, o.net_ns_inum).unwrap_or(0)
}

/// The namespace of any socket, mini-sockets included (`skc_net` is in sock_common).
#[inline(always)]
fn sk_netns(sk: u64, o: &TraceOffsets) -> u32 {
    kread::<u64>(sk, o.sk_net).map_or(0, |n| net_inum(n, o))
}

/// cgroup v2 id and uid of a full socket.
#[inline(always)]
fn owner(sk: u64, o: &TraceOffsets, a: &mut Attribution) {
    a.cgroup_id = kread::<u64>(sk, o.sk_cgrp_cgroup)
        .and_then(|cg| kread::<u64>(cg, o.cgroup_kn))
        .and_then(|kn| kread::<u64>(kn, o.kn_id))
        .unwrap_or(0);
    a.uid = kread::<u32>(sk, o.sk_uid).unwrap_or(UID_NONE);
}

#[inline(always)]
fn listen_key(sk: u64, o: &TraceOffsets) -> Option<ListenKey> {
    Some(ListenKey {
        netns: sk_netns(sk, o),
        port: kread::<u16>(sk, o.sk_num)?,
        family: kread::<u16>(sk, o.sk_family)?,
    })
}

/// The listener entry at `key` when exactly one socket listens there.
#[inline(always)]
fn listener_of(key: &ListenKey) -> Option<*const ListenInfo> {
    let li = LISTENERS.get_ptr(key)?;
    // SAFETY: a map value read in place; a concurrent update can only change its fields.
    (unsafe { (*li).ambiguous } == 0).then_some(li)
}

/// The current task's process id and comm, into `a`.
#[inline(always)]
fn set_current(a: &mut Attribution, source: u8) {
    a.pid_source = source;
    a.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: `comm` is 16 writable bytes.
    unsafe { generated::bpf_get_current_comm(a.comm.as_mut_ptr().cast(), 16) };
}

// `set_from` copies `comm` as two words: both sources and the destination hold it at an
// 8-byte aligned offset.
const _: () = assert!(
    core::mem::offset_of!(ConnStart, comm) % 8 == 0
        && core::mem::offset_of!(ListenInfo, comm) % 8 == 0
        && core::mem::offset_of!(Attribution, comm) % 8 == 0
);

/// `pid`/`comm` from a recorded entry.
#[inline(always)]
fn set_from(a: &mut Attribution, source: u8, pid: u32, comm: *const [u8; 16]) {
    a.pid_source = source;
    a.pid = pid;
    // SAFETY: `comm` points into a live map value (16 bytes at an 8-aligned offset of
    // `ConnStart` and `ListenInfo`); `a.comm` is at offset 24 of an Attribution.
    unsafe {
        copy_words(
            (&raw mut a.comm).cast::<[u64; 2]>(),
            comm.cast::<[u64; 2]>(),
        )
    };
}

/// The scratch space of one reset (per CPU: the stack is too small for it), the
/// `SCRATCH` map's value. `repr(C)`: `win` must come first (see there).
#[repr(C)]
pub(crate) struct Scratch {
    /// A window of `sk_buff`, then the trigger's headers (trace.rs), then one of
    /// `tcp_sock` ([`conn_info`]). First: a masked read that runs past its end stays
    /// inside the value.
    pub(crate) win: [u64; crate::trace::WIN_WORDS],
    pub(crate) attr: Attribution,
    pub(crate) conn: ConnInfo,
    /// The key a passive reset is announced under in `PENDING_RESETS` (trace.rs).
    pub(crate) pending: rst_common::PendingKey,
    /// The segment that triggered a sent reset (trace.rs).
    pub(crate) seg: crate::trace::Trigger,
}

#[inline(always)]
pub(crate) fn scratch() -> Option<&'static mut Scratch> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU map value; programs do not nest on a CPU.
    Some(unsafe { &mut *p.cast::<Scratch>() })
}

#[inline(always)]
fn reset(a: &mut Attribution) {
    // SAFETY: a whole Attribution (8-aligned, 40 bytes).
    unsafe { zero_words(a) };
    a.uid = UID_NONE;
    a.pid_source = PID_NONE;
}

/// Who a sent reset belongs to. `full`: `sk` is a full socket; `skb`: its trigger.
/// Returns the socket's connection record, if any.
#[inline(always)]
pub(crate) fn attribute_send(
    a: &mut Attribution,
    sk: u64,
    skb: u64,
    st: u8,
    full: bool,
    o: &TraceOffsets,
) -> Option<*const ConnStart> {
    reset(a);
    if sk == 0 {
        // No socket: the namespace of the device the trigger arrived on.
        if skb != 0 {
            a.netns = kread::<u64>(skb, o.skb_dev)
                .and_then(|dev| kread::<u64>(dev, o.dev_nd_net))
                .map_or(0, |n| net_inum(n, o));
        }
        return None;
    }
    a.netns = sk_netns(sk, o);
    if full {
        owner(sk, o, a);
        let start = CONNS.get_ptr(sk);
        // An active reset (no trigger) while a task holds the socket lock runs in that
        // task's system call (close(), disconnect, ss -K): softirq and timers never
        // process a socket its owner has locked.
        let owned = kread::<i32>(sk, o.sk_lock_owned).unwrap_or(0);
        if skb == 0 && owned > 0 {
            set_current(a, PID_RESET);
        } else if let Some(s) = start {
            // SAFETY: a live map value.
            unsafe { set_from(a, (*s).pid_source, (*s).pid, &(*s).comm) };
        }
        return start;
    }
    if st == state::NEW_SYN_RECV {
        // A request socket: its listener owns it.
        if let Some(l) = kread::<u64>(sk, o.sk_listener).filter(|l| *l != 0) {
            owner(l, o, a);
        }
        if let Some(li) = listen_key(sk, o).as_ref().and_then(listener_of) {
            // SAFETY: a live map value.
            unsafe { set_from(a, PID_LISTEN, (*li).pid, &(*li).comm) };
        }
    }
    // A time-wait socket has no owner any more: its namespace only.
    None
}

/// Who a received reset's socket belongs to (always a full socket).
#[inline(always)]
pub(crate) fn attribute_recv(
    a: &mut Attribution,
    sk: u64,
    o: &TraceOffsets,
) -> Option<*const ConnStart> {
    reset(a);
    a.netns = sk_netns(sk, o);
    owner(sk, o, a);
    let start = CONNS.get_ptr(sk);
    if let Some(s) = start {
        // SAFETY: a live map value.
        unsafe { set_from(a, (*s).pid_source, (*s).pid, &(*s).comm) };
    }
    start
}

/// Jiffies to milliseconds; `u32::MAX` when HZ is unknown.
#[inline(always)]
fn jiffies_ms(j: u32, hz: u16) -> u32 {
    if hz == 0 {
        return u32::MAX;
    }
    let ms = j as u64 * 1000 / hz as u64;
    if ms > u32::MAX as u64 {
        u32::MAX
    } else {
        ms as u32
    }
}

/// No connection context (a reset without a full socket).
#[inline(always)]
pub(crate) fn no_conn(c: &mut ConnInfo) {
    // SAFETY: a whole ConnInfo (8-aligned, 64 bytes); every field is 0 but the age.
    unsafe { zero_words(c) };
    c.age_ns = AGE_UNKNOWN;
}

/// The connection context of a full TCP socket in state `st` at the reset. Sockets that
/// never synchronized (SYN_SENT, LISTEN) have none.
#[inline(always)]
pub(crate) fn conn_info(
    c: &mut ConnInfo,
    win: &mut [u64; WIN_WORDS],
    sk: u64,
    st: u8,
    start: Option<*const ConnStart>,
    o: &TraceOffsets,
) {
    no_conn(c);
    if st == state::SYN_SENT || st == state::LISTEN || o.tp_bytes_received == OFF_NONE {
        return;
    }
    // The window's fields from one read, the others one read each (all offsets are
    // load-time constants: the verifier keeps one branch per field).
    let windowed = o.tp_win != OFF_NONE && read_window(win, sk, o.tp_win, o.tp_win_len);
    let inside = |off: u16, n: u16| {
        windowed
            && off >= o.tp_win
            && off as u32 + n as u32 <= o.tp_win as u32 + o.tp_win_len as u32
    };
    let u32_at = |off: u16| {
        if inside(off, 4) {
            win_read::<u32>(win, off.wrapping_sub(o.tp_win) as usize)
        } else {
            kread::<u32>(sk, off).unwrap_or(0)
        }
    };
    let u64_at = |off: u16| {
        if inside(off, 8) {
            win_read::<u64>(win, off.wrapping_sub(o.tp_win) as usize)
        } else {
            kread::<u64>(sk, off).unwrap_or(0)
        }
    };
    c.bytes_received = u64_at(o.tp_bytes_received);
    c.bytes_acked = u64_at(o.tp_bytes_acked);
    c.segs_in = u32_at(o.tp_segs_in);
    c.segs_out = u32_at(o.tp_segs_out);
    c.unread = u32_at(o.tp_rcv_nxt).wrapping_sub(u32_at(o.tp_copied_seq));
    let snd_nxt = u32_at(o.tp_snd_nxt);
    c.unsent = u32_at(o.tp_write_seq).wrapping_sub(snd_nxt);
    c.unacked = snd_nxt.wrapping_sub(u32_at(o.tp_snd_una));
    c.srtt_us = u32_at(o.tp_srtt_us) >> 3;
    c.retrans = u32_at(o.tp_total_retrans);
    // tcp_jiffies32; the receive side as keepalive measures it
    // (keepalive_time_elapsed: the later of the last data and the last ACK received).
    // SAFETY: helper without preconditions.
    let now = unsafe { generated::bpf_jiffies64() } as u32;
    let rx = now
        .wrapping_sub(u32_at(o.icsk_lrcvtime))
        .min(now.wrapping_sub(u32_at(o.tp_rcv_tstamp)));
    let tx = now.wrapping_sub(u32_at(o.tp_lsndtime));
    c.idle_rx_ms = jiffies_ms(rx, o.hz);
    c.idle_tx_ms = jiffies_ms(tx, o.hz);
    if let Some(s) = start {
        // SAFETY: helper without preconditions; a live map value.
        c.age_ns = unsafe { bpf_ktime_get_ns().saturating_sub((*s).start_ns) };
    }
    c.valid = 1;
}

/// Counts the reset for its workload, exactly, and puts its idle time and age into the
/// histograms of `side`.
#[inline(always)]
pub(crate) fn account(side: u8, key: u64, a: &Attribution, c: &ConnInfo) {
    let wk = WorkloadKey {
        cgroup_id: a.cgroup_id,
        netns: a.netns,
        side,
        _pad: [0; 3],
        key,
    };
    if !try_count(&WORKLOAD_COUNTERS, &wk) {
        stat_add(Stat::WorkloadMapFull);
    }
    if c.valid == 0 {
        return;
    }
    if c.idle_rx_ms != u32::MAX {
        observe(HIST_IDLE, side, c.idle_rx_ms as u64, &IDLE_BOUNDS_MS);
    }
    if c.age_ns != AGE_UNKNOWN {
        observe(HIST_AGE, side, c.age_ns / 1_000_000, &AGE_BOUNDS_MS);
    }
}

#[inline(always)]
fn observe(kind: u32, side: u8, ms: u64, bounds: &[u64; HIST_BOUNDS]) {
    let mut bucket = HIST_BOUNDS as u32;
    for (i, b) in bounds.iter().enumerate() {
        if ms <= *b {
            bucket = i as u32;
            break;
        }
    }
    array_add(&HISTOGRAMS, hist_index(kind, side, bucket));
    array_add_n(&HISTOGRAMS, hist_index(kind, side, HIST_SUM), ms);
}

// --- the state-change program --------------------------------------------------------

/// `sock:inet_sock_set_state(sk, oldstate, newstate)`, a raw tracepoint. Records:
/// * SYN_SENT: the connect() caller (this program runs in it) and the start time;
/// * SYN_RECV from LISTEN (`inet_csk_clone_lock`: the new child still carries its
///   listener's namespace, port and family): the listen() caller of that listener and
///   the start time;
/// * LISTEN / LISTEN → CLOSE: the listen() caller per (namespace, port, family).
///
/// Entries are not deleted on CLOSE: an active reset is sent after the socket entered
/// CLOSE (tcp_disconnect, __tcp_close). Every socket that can be reset passed through
/// SYN_SENT, SYN_RECV or LISTEN after it was allocated, which overwrites (or, for
/// LISTEN, deletes) whatever an earlier socket at the same address left; the table is
/// LRU-bounded.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn rstmon_sock_set_state(ctx: RawTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as u8;
    let new = ctx.arg::<u64>(2) as u8;
    let interesting = new == state::SYN_SENT
        || new == state::LISTEN
        || (old == state::LISTEN && (new == state::SYN_RECV || new == state::CLOSE));
    if !interesting {
        return 0;
    }
    let o = offsets();
    if kread::<u16>(sk, o.sk_protocol) != Some(IPPROTO_TCP as u16) {
        return 0;
    }
    if new == state::SYN_SENT {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        record(sk, PID_CONNECT, pid, comm);
        return 0;
    }
    let Some(key) = listen_key(sk, &o) else {
        return 0;
    };
    if new == state::SYN_RECV {
        match listener_of(&key) {
            // SAFETY: a live map value.
            Some(li) => unsafe { record(sk, PID_LISTEN, (*li).pid, (*li).comm) },
            None => record(sk, PID_NONE, 0, [0; 16]),
        }
        return 0;
    }
    if new == state::LISTEN {
        let _ = CONNS.remove(sk);
        if key.port == 0 {
            return 0;
        }
        match LISTENERS.get_ptr_mut(key) {
            Some(p) => {
                // SAFETY: a live map value.
                unsafe {
                    if (*p).sk != sk {
                        (*p).listeners += 1;
                        (*p).ambiguous = 1;
                    }
                }
            }
            None => {
                let li = ListenInfo {
                    sk,
                    pid: (bpf_get_current_pid_tgid() >> 32) as u32,
                    listeners: 1,
                    ambiguous: 0,
                    _pad: 0,
                    comm: bpf_get_current_comm().unwrap_or([0; 16]),
                };
                let _ = LISTENERS.insert(key, li, 0);
            }
        }
        return 0;
    }
    // LISTEN → CLOSE.
    if let Some(p) = LISTENERS.get_ptr_mut(key) {
        // SAFETY: a live map value.
        let left = unsafe {
            (*p).listeners = (*p).listeners.saturating_sub(1);
            (*p).listeners
        };
        if left == 0 {
            let _ = LISTENERS.remove(key);
        }
    }
    0
}

#[inline(always)]
fn record(sk: u64, source: u8, pid: u32, comm: [u8; 16]) {
    let s = ConnStart {
        // SAFETY: helper without preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        pid,
        pid_source: source,
        _pad: [0; 3],
        comm,
    };
    let _ = CONNS.insert(sk, s, 0);
}

const _: () = assert!(core::mem::size_of::<Scratch>() == SCRATCH_WORDS * 8);
