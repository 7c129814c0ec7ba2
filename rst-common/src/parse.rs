//! The one frame parser: used by the XDP program on packet memory and by host tests on
//! hand-built frames. Every read goes through [`load`], which checks bounds against the
//! end of the frame in the form the eBPF verifier understands.
//!
//! Only RST segments get past [`parse_rst`]; the non-RST path reads as little as it can
//! and copies nothing.

use core::mem::{align_of, size_of};

use crate::{
    FAMILY_IPV4, FAMILY_IPV6, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ROUTING, IPPROTO_TCP, TCP_RST, WireEvent,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags walked (802.1Q and 802.1ad, in any order).
pub const MAX_VLAN: usize = 2;
/// IPv6 extension headers walked before giving up.
pub const MAX_EXT_HDRS: usize = 6;
/// Extension headers may not push the TCP header further than this into the frame.
pub const MAX_L4_OFFSET: usize = 512;

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_TIMESTAMP: u8 = 8;
const TCPOLEN_TIMESTAMP: u8 = 10;

/// Where an RST segment's headers are, found by [`parse_rst`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rst {
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// The TCP flags byte (RST is set).
    pub flags: u8,
    pub vlan_depth: u8,
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// Offset of the TCP header in the frame.
    pub l4: usize,
    /// TCP header length (data offset × 4).
    pub tcp_hlen: usize,
    /// TCP payload length from the IP length fields.
    pub payload_len: usize,
}

/// Reads a `T` at `off` bytes into the frame `[start, end)`, or `None` past its end.
///
/// Verifier notes, where `off` is not a constant:
/// * read at least two bytes: LLVM turns `p + 1 > end` into `p >= end`, which gives
///   the verifier no readable range for `p`;
/// * read each header in one load: LLVM drops checks it can prove redundant, and a
///   pointer computed another way then has no range the verifier knows of.
#[inline(always)]
pub fn load<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range [start+off, start+off+size_of::<T>()) lies inside the frame,
    // which the caller guarantees is readable memory.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// The byte at `off` of a frame the caller has checked holds it.
#[inline(always)]
fn byte(start: usize, off: usize) -> u8 {
    // SAFETY: the caller checked `start + off < end`: the byte lies inside the frame,
    // which the caller of the parser guarantees is readable memory.
    unsafe { *((start + off) as *const u8) }
}

#[inline(always)]
fn be16(start: usize, end: usize, off: usize) -> Option<u16> {
    load::<u16>(start, end, off).map(u16::from_be)
}

/// The u16 at `off` as it lies in the frame (network order, no byte swap), of a frame
/// the caller has checked holds it.
#[inline(always)]
fn raw16(start: usize, off: usize) -> u16 {
    // SAFETY: as in `byte`.
    unsafe { core::ptr::read_unaligned((start + off) as *const u16) }
}

/// Whether [`parse_tcp`] with `mask` surely returns `None` for the frame, decided by the
/// limit baseline's tests alone: the EtherType behind zero or one VLAN tag compared in
/// network order (neither IP nor a second tag: ruled out), then, under one bounds check,
/// IPv4 without options (version/IHL 0x45) and its protocol, or IPv6 with TCP as the
/// next header, and the TCP flags at their fixed offset. `true` only for frames `parse_tcp` returns `None` for (the parser's
/// host tests check it on every frame they build); `false` says nothing.
///
/// The XDP program runs this alone for the packets that are not RSTs, so that its entry
/// is this and nothing else (see `rstmon_xdp`).
#[inline(always)]
pub fn surely_not(start: usize, end: usize, mask: u8) -> bool {
    const Q: u16 = ETH_P_8021Q.to_be();
    const AD: u16 = ETH_P_8021AD.to_be();
    // Shorter than this holds no IP header, tagged or not; the walk says so.
    if start + ETH_HLEN + 4 > end {
        return false;
    }
    let proto = raw16(start, 12);
    if proto == Q || proto == AD {
        return surely_not_at(start, end, raw16(start, ETH_HLEN + 2), ETH_HLEN + 4, mask);
    }
    surely_not_at(start, end, proto, ETH_HLEN, mask)
}

/// [`surely_not`] for the IP header at `l3` with the EtherType `proto` (network order).
#[inline(always)]
fn surely_not_at(start: usize, end: usize, proto: u16, l3: usize, mask: u8) -> bool {
    const Q: u16 = ETH_P_8021Q.to_be();
    const AD: u16 = ETH_P_8021AD.to_be();
    if proto == ETH_P_IP.to_be() {
        start + l3 + 20 + 14 <= end
            && byte(start, l3) == 0x45
            && (byte(start, l3 + 9) != IPPROTO_TCP || byte(start, l3 + 20 + 13) & mask == 0)
    } else if proto == ETH_P_IPV6.to_be() {
        // TCP as the next header and none of `mask`: no segment the walk would find,
        // whatever the version nibble says (the walk finds none when it is not 6).
        start + l3 + 40 + 14 <= end
            && byte(start, l3 + 6) == IPPROTO_TCP
            && byte(start, l3 + 40 + 13) & mask == 0
    } else {
        // Neither IP nor a tag: no TCP segment. Another tag is the walk's.
        proto != Q && proto != AD
    }
}

/// Parses an Ethernet frame in `[start, end)` and returns where its TCP RST segment is.
///
/// `None` for anything that is not a complete, well-formed TCP segment with RST set:
/// other protocols, non-first fragments, IHL < 5, data offset < 5, truncated headers,
/// IP length fields too short for the headers, or more headers than the walk bounds.
///
/// This runs for every packet, so the non-RST path is kept short: the IP header is
/// parsed at a constant offset for each VLAN depth, and the checks only an RST needs
/// (fragment offset, length fields, the whole TCP header) come after the TCP flags.
/// Every check returns `None`, so their order does not change the result.
#[inline(always)]
pub fn parse_rst(start: usize, end: usize) -> Option<Rst> {
    parse_tcp(start, end, TCP_RST)
}

/// [`parse_rst`] for segments with any of the TCP flags in `mask` set (RST or SYN for
/// the XDP program, which learns the peer's TTL from handshakes): the same walk and the
/// same one test on the non-matching path, with another constant. [`Rst::flags`] says
/// which flags the segment has.
#[inline(always)]
pub fn parse_tcp(start: usize, end: usize, mask: u8) -> Option<Rst> {
    // The VLAN walk, unrolled: each depth gets its own copy of the IP parser, with the
    // IP header at a constant offset.
    const _: () = assert!(MAX_VLAN == 2, "parse_rst unrolls exactly MAX_VLAN tags");
    let is_vlan = |p: u16| p == ETH_P_8021Q || p == ETH_P_8021AD;
    let proto = be16(start, end, 12)?;
    if !is_vlan(proto) {
        return parse_ip(start, end, proto, ETH_HLEN, 0, mask);
    }
    let proto = be16(start, end, ETH_HLEN + 2)?;
    if !is_vlan(proto) {
        return parse_ip(start, end, proto, ETH_HLEN + 4, 1, mask);
    }
    let proto = be16(start, end, ETH_HLEN + 6)?;
    parse_ip(start, end, proto, ETH_HLEN + 8, 2, mask)
}

/// [`parse_rst`] from the EtherType `proto` of the header at `l3`.
#[inline(always)]
fn parse_ip(
    start: usize,
    end: usize,
    proto: u16,
    l3: usize,
    vlan_depth: u8,
    mask: u8,
) -> Option<Rst> {
    // The end of the parse once the IP layer is known: `l4`, the TCP flags and the IP
    // payload length (from the IP length fields) go to `tcp_rst`.
    let rst = |family, flags, l4, ip_payload| {
        tcp_rst(start, end, family, flags, vlan_depth, l3, l4, ip_payload)
    };
    if proto == ETH_P_IP {
        // The common frame first, as the limit baseline reads it: no IP options, the
        // TCP flags at a fixed offset, one bounds check for all three bytes. A segment
        // with none of `mask` ends here; the rest go on below (the same result for
        // every frame: those bytes are the ones the walk below tests).
        if start + l3 + 20 + 14 <= end
            && byte(start, l3) == 0x45
            && (byte(start, l3 + 9) != IPPROTO_TCP || byte(start, l3 + 20 + 13) & mask == 0)
        {
            return None;
        }
        let [vihl, _tos]: [u8; 2] = load(start, end, l3)?;
        let [_ttl, protocol]: [u8; 2] = load(start, end, l3 + 8)?;
        if protocol != IPPROTO_TCP || vihl >> 4 != 4 {
            return None;
        }
        let ihl = ((vihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        let l4 = l3 + ihl;
        let flags = tcp_flags(start, end, l4, mask)?;
        // A non-first fragment carries no TCP header.
        if be16(start, end, l3 + 6)? & 0x1fff != 0 {
            return None;
        }
        let tot_len = be16(start, end, l3 + 2)? as usize;
        if tot_len < ihl {
            return None;
        }
        return rst(FAMILY_IPV4, flags, l4, tot_len - ihl);
    }
    if proto != ETH_P_IPV6 {
        return None;
    }
    // As for IPv4: TCP as the next header, the flags at a fixed offset.
    if start + l3 + 40 + 14 <= end
        && byte(start, l3) >> 4 == 6
        && byte(start, l3 + 6) == IPPROTO_TCP
        && byte(start, l3 + 40 + 13) & mask == 0
    {
        return None;
    }
    let [v, _]: [u8; 2] = load(start, end, l3)?;
    if v >> 4 != 6 {
        return None;
    }
    let [mut nh, _hop_limit]: [u8; 2] = load(start, end, l3 + 6)?;
    let mut off = l3 + 40;
    let mut found = nh == IPPROTO_TCP;
    for _ in 0..MAX_EXT_HDRS {
        if found {
            break;
        }
        // Every extension header is at least 8 bytes: read its first 4 in one load.
        let [next, l, f0, f1]: [u8; 4] = load(start, end, off)?;
        let len = match nh {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => (l as usize + 1) * 8,
            IPPROTO_FRAGMENT => {
                // Offset in the upper 13 bits: a non-first fragment has no TCP header.
                if u16::from_be_bytes([f0, f1]) & 0xfff8 != 0 {
                    return None;
                }
                8
            }
            IPPROTO_AH => (l as usize + 2) * 4,
            _ => return None,
        };
        off += len;
        if off > MAX_L4_OFFSET {
            return None;
        }
        nh = next;
        found = nh == IPPROTO_TCP;
    }
    if !found {
        return None;
    }
    let l4 = off;
    let flags = tcp_flags(start, end, l4, mask)?;
    let plen = be16(start, end, l3 + 4)? as usize;
    let ext = l4 - (l3 + 40);
    if plen < ext {
        return None;
    }
    rst(FAMILY_IPV6, flags, l4, plen - ext)
}

/// The TCP flags at `l4` if any of `mask` is set: where the non-RST path ends, after
/// one load from the TCP header.
#[inline(always)]
fn tcp_flags(start: usize, end: usize, l4: usize, mask: u8) -> Option<u8> {
    let [_, flags]: [u8; 2] = load(start, end, l4 + 12)?;
    if flags & mask == 0 { None } else { Some(flags) }
}

/// The end of [`parse_rst`] for an RST: the fixed TCP header and its length checks.
/// `ip_payload` is the byte count after the IP headers, from the IP length fields.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field of the sample it fills"
)]
#[inline(always)]
fn tcp_rst(
    start: usize,
    end: usize,
    family: u8,
    flags: u8,
    vlan_depth: u8,
    l3: usize,
    l4: usize,
    ip_payload: usize,
) -> Option<Rst> {
    // The fixed header must be in the frame; only its data offset is read here (a copy
    // of all 20 bytes is 40 instructions: LLVM moves unaligned packet bytes one by one).
    if start + l4 + 20 > end {
        return None;
    }
    let tcp_hlen = ((byte(start, l4 + 12) >> 4) as usize) * 4;
    if tcp_hlen < 20 || ip_payload < tcp_hlen {
        return None;
    }
    // The whole TCP header, options included, must be in the frame.
    if tcp_hlen > 20 {
        load::<[u8; 2]>(start, end, l4 + tcp_hlen - 2)?;
    }
    Some(Rst {
        family,
        flags,
        vlan_depth,
        l3,
        l4,
        tcp_hlen,
        payload_len: ip_payload - tcp_hlen,
    })
}

/// Whether the TCP options of `rst` carry a timestamp (walks at most 16 options).
#[inline(always)]
pub fn has_timestamp(start: usize, end: usize, rst: &Rst) -> bool {
    let opt_end = rst.l4 + rst.tcp_hlen;
    let mut off = rst.l4 + 20;
    for _ in 0..16 {
        if off >= opt_end {
            return false;
        }
        // Two bytes: kind and length (see `load`). A kind in the very last byte of the
        // frame can only be NOP or EOL, after which no timestamp fits.
        let Some([kind, len]) = load::<[u8; 2]>(start, end, off) else {
            return false;
        };
        match kind {
            TCPOPT_EOL => return false,
            TCPOPT_NOP => off += 1,
            _ => {
                if kind == TCPOPT_TIMESTAMP {
                    // As Linux's tcp_parse_options: length 10, inside the header.
                    return len == TCPOLEN_TIMESTAMP && off + TCPOLEN_TIMESTAMP as usize <= opt_end;
                }
                if len < 2 {
                    return false;
                }
                off += len as usize;
            }
        }
    }
    false
}

const _: () = assert!(
    align_of::<WireEvent>() == 8
        && core::mem::offset_of!(WireEvent, saddr) % 8 == 0
        && core::mem::offset_of!(WireEvent, daddr) % 8 == 0
);

/// Fills the header fields of a wire sample (everything but kind, ifindex and time).
#[inline(always)]
pub fn fill_sample(start: usize, end: usize, rst: &Rst, ev: &mut WireEvent) -> Option<()> {
    let l3 = rst.l3;
    ev.family = rst.family;
    ev.tcp_flags = rst.flags;
    ev.vlan_depth = rst.vlan_depth;
    // The addresses are written as 8-byte words: as byte arrays LLVM writes them
    // through memset/memmove loops of one byte per iteration.
    let words = [
        (&raw mut ev.saddr).cast::<u64>(),
        (&raw mut ev.daddr).cast::<u64>(),
    ];
    if rst.family == FAMILY_IPV4 {
        ev.ttl = load(start, end, l3 + 8)?;
        ev.ip_id = be16(start, end, l3 + 4)?;
        let [s, d]: [[u8; 4]; 2] = load(start, end, l3 + 12)?;
        for (w, [a, b, c, d]) in words.into_iter().zip([s, d]) {
            // SAFETY: `saddr` and `daddr` are 16 bytes at 8-aligned offsets of a
            // repr(C) struct with 8-byte alignment (asserted below).
            unsafe {
                w.write(u64::from_ne_bytes([a, b, c, d, 0, 0, 0, 0]));
                w.add(1).write(0);
            }
        }
    } else {
        ev.ttl = load(start, end, l3 + 7)?;
        ev.ip_id = 0;
        let a: [u64; 4] = load(start, end, l3 + 8)?;
        // SAFETY: as above.
        unsafe {
            words[0].write(a[0]);
            words[0].add(1).write(a[1]);
            words[1].write(a[2]);
            words[1].add(1).write(a[3]);
        }
    }
    let th: [u8; 16] = load(start, end, rst.l4)?;
    ev.sport = u16::from_be_bytes([th[0], th[1]]);
    ev.dport = u16::from_be_bytes([th[2], th[3]]);
    ev.seq = u32::from_be_bytes([th[4], th[5], th[6], th[7]]);
    ev.ack = u32::from_be_bytes([th[8], th[9], th[10], th[11]]);
    ev.window = u16::from_be_bytes([th[14], th[15]]);
    ev.payload_len = rst.payload_len as u16;
    ev.has_ts = has_timestamp(start, end, rst) as u8;
    Some(())
}
