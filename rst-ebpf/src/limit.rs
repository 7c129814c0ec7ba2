//! Benchmark baselines at the physical limit: the least work that counts an ingress TCP
//! RST, against which the benchmarks put `rstmon_xdp` (the no-op says only what running
//! any program costs).
//!
//! * `rstmon_xdp_limit`: headers at fixed offsets only — Ethernet, then IPv4 without
//!   options (version/IHL byte exactly 0x45) or IPv6 without extension headers (next
//!   header TCP), then the TCP flags byte — and one per-CPU array counter per (family,
//!   ACK). No VLAN tags, no IPv4 options, no extension headers, no fragment or length
//!   checks: a frame it does not recognise at those offsets passes uncounted.
//! * `rstmon_xdp_limit_vlan`: the same with zero or one VLAN tag (802.1Q or 802.1ad), so
//!   that a tagged frame is parsed as far as `rstmon_xdp` parses it.
//! * `rstmon_xdp_limit_slot`: a diagnostic, the limit's parse with rstmon's own
//!   per-interface counting (`IFINDEX_SLOT` → `WIRE_SLOTS`), which splits rstmon's
//!   distance to the limit into parsing and counting.
//!
//! The first two count into `LIMIT_COUNTS` ([`rst_common::limit_index`]). All return
//! `XDP_PASS`; the daemon never loads them.

use aya_ebpf::{bindings::xdp_action, macros::xdp, maps::PerCpuArray, programs::XdpContext};
use rst_common::{
    DIR_INGRESS, TCP_ACK, TCP_RST, limit_index,
    parse::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6},
    wire_slot_index,
};

use crate::{IFINDEX_SLOT, LIMIT_COUNTS, WIRE_SLOTS, util::slot_add};

/// IPPROTO_TCP.
const TCP: u8 = 6;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS: usize = 13;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const VLAN_HLEN: usize = 4;

/// The byte at `off` of a frame whose first `off + 1` bytes the caller has checked.
#[inline(always)]
fn byte(start: usize, off: usize) -> u8 {
    // SAFETY: the caller checked that the frame holds this byte.
    unsafe { *((start + off) as *const u8) }
}

/// The big-endian u16 at `off`, compared as it lies in the frame (no byte swap).
#[inline(always)]
fn raw16(start: usize, off: usize) -> u16 {
    // SAFETY: the caller checked that the frame holds these two bytes.
    unsafe { core::ptr::read_unaligned((start + off) as *const u16) }
}

/// `(v6, ack)` of the frame if it is a TCP RST whose IP header starts at `l3` and whose
/// EtherType is `proto` (as it lies in the frame).
#[inline(always)]
fn classify(start: usize, end: usize, proto: u16, l3: usize) -> Option<(u32, u32)> {
    let (v6, flags) = if proto == ETH_P_IP.to_be() {
        let l4 = l3 + IPV4_HLEN;
        if start + l4 + TCP_FLAGS + 1 > end {
            return None;
        }
        if byte(start, l3) != 0x45 || byte(start, l3 + 9) != TCP {
            return None;
        }
        (0, byte(start, l4 + TCP_FLAGS))
    } else if proto == ETH_P_IPV6.to_be() {
        let l4 = l3 + IPV6_HLEN;
        if start + l4 + TCP_FLAGS + 1 > end {
            return None;
        }
        if byte(start, l3 + 6) != TCP {
            return None;
        }
        (1, byte(start, l4 + TCP_FLAGS))
    } else {
        return None;
    };
    if flags & TCP_RST == 0 {
        return None;
    }
    Some((v6, (flags & TCP_ACK != 0) as u32))
}

/// Adds one to a per-CPU `u64` array slot.
#[inline(always)]
fn add(map: &PerCpuArray<u64>, idx: u32) {
    if let Some(p) = map.get_ptr_mut(idx) {
        // SAFETY: a per-CPU value owned by this CPU; XDP does not nest on a CPU.
        unsafe { *p += 1 };
    }
}

/// Counts the frame in `LIMIT_COUNTS` if it is a TCP RST (see [`classify`]).
#[inline(always)]
fn count_at(start: usize, end: usize, proto: u16, l3: usize) {
    if let Some((v6, ack)) = classify(start, end, proto, l3) {
        add(&LIMIT_COUNTS, limit_index(v6, ack));
    }
}

/// The limit baseline: fixed offsets, no VLAN.
#[xdp]
pub fn rstmon_xdp_limit(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_HLEN > end {
        return xdp_action::XDP_PASS;
    }
    count_at(start, end, raw16(start, 12), ETH_HLEN);
    xdp_action::XDP_PASS
}

/// The limit baseline with zero or one VLAN tag.
#[xdp]
pub fn rstmon_xdp_limit_vlan(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    // Shorter than this holds no IP header, tagged or not.
    if start + ETH_HLEN + VLAN_HLEN > end {
        return xdp_action::XDP_PASS;
    }
    let proto = raw16(start, 12);
    if proto == ETH_P_8021Q.to_be() || proto == ETH_P_8021AD.to_be() {
        count_at(start, end, raw16(start, ETH_HLEN + 2), ETH_HLEN + VLAN_HLEN);
    } else {
        count_at(start, end, proto, ETH_HLEN);
    }
    xdp_action::XDP_PASS
}

/// A diagnostic between the limit and `rstmon_xdp`: the limit's fixed-offset parse, then
/// rstmon's own per-interface counting (the ingress ifindex, its slot in `IFINDEX_SLOT`,
/// the counter in `WIRE_SLOTS`; nothing when the interface has no slot). The difference
/// to the limit is what counting per interface costs; the rest of `rstmon_xdp`'s
/// difference is its parse.
#[xdp]
pub fn rstmon_xdp_limit_slot(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_HLEN > end {
        return xdp_action::XDP_PASS;
    }
    let Some((v6, ack)) = classify(start, end, raw16(start, 12), ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    if let Some(slot) = IFINDEX_SLOT.get(ifindex)
        && *slot != 0
    {
        slot_add(
            &WIRE_SLOTS,
            *slot - 1,
            wire_slot_index(0, DIR_INGRESS, v6, ack),
        );
    }
    xdp_action::XDP_PASS
}
