//! Host tests of the frame parser (`rst_common::parse`) on hand-built frames, truncated
//! and malformed ones included, and a seeded fuzz loop checked against an independent,
//! slice-based reading of the parser's contract ([`reference`]).

use rst_common::{
    EVENT_WIRE, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_AH, IPPROTO_FRAGMENT, IPPROTO_ROUTING,
    IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, WireEvent,
    parse::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, MAX_EXT_HDRS, MAX_L4_OFFSET,
        MAX_VLAN, Rst, parse_rst, parse_tcp, surely_not,
    },
};
use rst_testkit::frames::{
    self, Built, ETH_P_ARP, Ext6, Frame, IPPROTO_ESP, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_NONE, Rng, Tcp, TcpOpt, Vlan, catalog, empty_event, example_rst_v4, mutate,
};

// --- helpers ------------------------------------------------------------------------------

/// Parses `frame` three ways: as it is, and copied into buffers where it is followed by
/// 0x00 and by 0xff bytes outside `[start, end)`. A read past the end would make the
/// results differ; panics if they do.
fn parse(frame: &[u8]) -> Option<Rst> {
    let exact = frames::parse(frame);
    for tail in [0x00, 0xff] {
        let mut buf = frame.to_vec();
        buf.extend_from_slice(&[tail; 96]);
        let start = buf.as_ptr() as usize;
        let r = parse_rst(start, start + frame.len());
        assert_eq!(
            r, exact,
            "result depends on bytes after the frame end: {frame:02x?}"
        );
        assert_prefilter_sound(start, start + frame.len());
    }
    exact
}

/// `surely_not` rules out only frames `parse_tcp` finds nothing in, for the masks the
/// programs use (TC: RST; XDP: RST or SYN).
fn assert_prefilter_sound(start: usize, end: usize) {
    for mask in [TCP_RST, TCP_RST | TCP_SYN] {
        if surely_not(start, end, mask) {
            let found = parse_tcp(start, end, mask);
            assert_eq!(
                found, None,
                "surely_not({mask:#x}) ruled out a frame parse_tcp finds: {found:?}"
            );
        }
    }
}

/// Whether `surely_not` rules `f` out for `mask`.
fn ruled_out(f: &Frame, mask: u8) -> bool {
    let b = f.build();
    let start = b.bytes.as_ptr() as usize;
    surely_not(start, start + b.bytes.len(), mask)
}

/// The sample of `frame`, also checked for reads past its end like [`parse`].
fn sample(frame: &[u8]) -> Option<WireEvent> {
    let exact = frames::sample(frame);
    for tail in [0x00, 0xff] {
        let mut buf = frame.to_vec();
        buf.extend_from_slice(&[tail; 96]);
        let ev = frames::sample(&buf[..frame.len()]);
        // The same bytes at another address, with different bytes after the end.
        let start = buf.as_ptr() as usize;
        let moved = parse_rst(start, start + frame.len()).map(|rst| {
            let mut ev = empty_event();
            ev.kind = EVENT_WIRE;
            rst_common::parse::fill_sample(start, start + frame.len(), &rst, &mut ev)
                .expect("fill_sample failed after parse_rst succeeded");
            ev
        });
        assert_eq!(ev, exact, "sample depends on the buffer: {frame:02x?}");
        assert_eq!(
            moved, exact,
            "sample depends on bytes after the end: {frame:02x?}"
        );
    }
    exact
}

/// What `parse_rst` must return for a well-formed built frame.
fn expected(b: &Built, family: u8, flags: u8, vlan_depth: u8) -> Option<Rst> {
    if flags & TCP_RST == 0 {
        return None;
    }
    Some(Rst {
        family,
        flags,
        vlan_depth,
        l3: b.l3,
        l4: b.l4,
        tcp_hlen: b.payload - b.l4,
        payload_len: b.bytes.len() - b.payload,
    })
}

fn family_of(f: &Frame) -> u8 {
    match f.ip {
        frames::Ip::V4(_) => FAMILY_IPV4,
        frames::Ip::V6(_) => FAMILY_IPV6,
    }
}

fn flags_of(f: &Frame) -> u8 {
    match &f.l4 {
        frames::L4::Tcp(t) => t.flags,
        frames::L4::Other { .. } => panic!("not a TCP frame"),
    }
}

/// Builds `f` and asserts the parser finds exactly what the builder laid out.
#[track_caller]
fn assert_found(name: &str, f: &Frame) -> Rst {
    let b = f.build();
    let want = expected(&b, family_of(f), flags_of(f), f.vlans.len() as u8);
    assert!(want.is_some(), "{name}: test bug, not an RST");
    let got = parse(&b.bytes);
    assert_eq!(got, want, "{name}: {:02x?}", b.bytes);
    got.unwrap()
}

#[track_caller]
fn assert_none(name: &str, f: &Frame) {
    let b = f.build();
    assert_eq!(parse(&b.bytes), None, "{name}: counted: {:02x?}", b.bytes);
}

fn rst4() -> Frame {
    Frame::tcp4(TCP_RST)
}

fn rst6() -> Frame {
    Frame::tcp6(TCP_RST)
}

// --- the reference ------------------------------------------------------------------------

/// The parser's contract, read independently on a slice: Ethernet, at most [`MAX_VLAN`]
/// tags, IPv4 (IHL ≥ 5, first fragments only) or IPv6 with at most [`MAX_EXT_HDRS`]
/// extension headers (first fragments only, TCP at most [`MAX_L4_OFFSET`] in), a TCP
/// header with RST, data offset ≥ 5, wholly in the frame and within the IP length.
fn reference(f: &[u8]) -> Option<Rst> {
    let be16 = |o: usize| f.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut proto = be16(12)?;
    let mut l3 = ETH_HLEN;
    let mut vlan_depth = 0;
    while vlan_depth < MAX_VLAN && (proto == ETH_P_8021Q || proto == ETH_P_8021AD) {
        proto = be16(l3 + 2)?;
        l3 += 4;
        vlan_depth += 1;
    }
    let (family, l4, ip_payload) = match proto {
        ETH_P_IP => {
            let ip = f.get(l3..l3 + 20)?;
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP || ihl < 20 || frag_off != 0 {
                return None;
            }
            let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            (FAMILY_IPV4, l3 + ihl, tot_len.checked_sub(ihl)?)
        }
        ETH_P_IPV6 => {
            let ip = f.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let mut nh = ip[6];
            let mut off = l3 + 40;
            let mut walked = 0;
            while nh != IPPROTO_TCP {
                if walked == MAX_EXT_HDRS {
                    return None;
                }
                let h = f.get(off..off + 4)?;
                off += match nh {
                    0 | IPPROTO_ROUTING | 60 => (h[1] as usize + 1) * 8,
                    IPPROTO_FRAGMENT if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 => return None,
                    IPPROTO_FRAGMENT => 8,
                    IPPROTO_AH => (h[1] as usize + 2) * 4,
                    _ => return None,
                };
                if off > MAX_L4_OFFSET {
                    return None;
                }
                nh = h[0];
                walked += 1;
            }
            (FAMILY_IPV6, off, plen.checked_sub(off - l3 - 40)?)
        }
        _ => return None,
    };
    let th: [u8; 20] = f.get(l4..l4 + 20)?.try_into().unwrap();
    let tcp_hlen = (th[12] >> 4) as usize * 4;
    if th[13] & TCP_RST == 0 || tcp_hlen < 20 || ip_payload < tcp_hlen || f.len() < l4 + tcp_hlen {
        return None;
    }
    Some(Rst {
        family,
        flags: th[13],
        vlan_depth: vlan_depth as u8,
        l3,
        l4,
        tcp_hlen,
        payload_len: ip_payload - tcp_hlen,
    })
}

/// Whether the options carry a timestamp the way Linux's `tcp_parse_options` sees one
/// (kind 8, length 10, inside the header), walking at most 16 options like the parser.
fn reference_has_ts(f: &[u8], rst: &Rst) -> bool {
    let end = rst.l4 + rst.tcp_hlen;
    let mut off = rst.l4 + 20;
    for _ in 0..16 {
        if off >= end {
            return false;
        }
        match f[off] {
            0 => return false,
            1 => off += 1,
            kind => {
                let Some(&len) = f.get(off + 1) else {
                    return false;
                };
                if kind == 8 {
                    return len == 10 && off + 10 <= end;
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

fn reference_sample(f: &[u8], rst: &Rst) -> WireEvent {
    let l3 = rst.l3;
    let mut ev = empty_event();
    ev.kind = EVENT_WIRE;
    ev.family = rst.family;
    ev.tcp_flags = rst.flags;
    ev.vlan_depth = rst.vlan_depth;
    if rst.family == FAMILY_IPV4 {
        ev.ttl = f[l3 + 8];
        ev.ip_id = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
        ev.saddr[..4].copy_from_slice(&f[l3 + 12..l3 + 16]);
        ev.daddr[..4].copy_from_slice(&f[l3 + 16..l3 + 20]);
    } else {
        ev.ttl = f[l3 + 7];
        ev.saddr.copy_from_slice(&f[l3 + 8..l3 + 24]);
        ev.daddr.copy_from_slice(&f[l3 + 24..l3 + 40]);
    }
    let t = &f[rst.l4..];
    ev.sport = u16::from_be_bytes([t[0], t[1]]);
    ev.dport = u16::from_be_bytes([t[2], t[3]]);
    ev.seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    ev.ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    ev.window = u16::from_be_bytes([t[14], t[15]]);
    ev.payload_len = rst.payload_len as u16;
    ev.has_ts = reference_has_ts(f, rst) as u8;
    ev
}

/// Asserts the parser and its sample agree with the reference on `f`.
#[track_caller]
fn assert_agrees(what: &str, f: &[u8]) -> Option<Rst> {
    let got = parse(f);
    assert_eq!(
        got,
        reference(f),
        "{what}: parser and reference differ on {f:02x?}"
    );
    let ev = sample(f);
    match (&got, ev) {
        (Some(rst), Some(ev)) => {
            assert!(
                rst.l4 + rst.tcp_hlen <= f.len(),
                "{what}: TCP header past the end"
            );
            assert_eq!(ev, reference_sample(f, rst), "{what}: sample on {f:02x?}");
        }
        (None, None) => {}
        (r, e) => panic!("{what}: parse {r:?} but sample {e:?} on {f:02x?}"),
    }
    got
}

// --- well-formed frames -------------------------------------------------------------------

#[test]
fn rst_and_rst_ack_are_found_with_their_layout() {
    for flags in [
        TCP_RST,
        TCP_RST | TCP_ACK,
        TCP_RST | TCP_PSH | TCP_ACK,
        0xff,
    ] {
        let r = assert_found("v4", &Frame::tcp4(flags));
        assert_eq!((r.family, r.flags, r.vlan_depth), (FAMILY_IPV4, flags, 0));
        assert_eq!((r.l3, r.l4, r.tcp_hlen, r.payload_len), (14, 34, 20, 0));

        let r = assert_found("v6", &Frame::tcp6(flags));
        assert_eq!((r.family, r.flags, r.vlan_depth), (FAMILY_IPV6, flags, 0));
        assert_eq!((r.l3, r.l4, r.tcp_hlen, r.payload_len), (14, 54, 20, 0));
    }
    let r = assert_found(
        "v4 payload",
        &rst4().with_tcp(|t| {
            t.options = Tcp::timestamp_options(1, 2);
            t.payload = vec![0; 33];
        }),
    );
    assert_eq!((r.tcp_hlen, r.payload_len), (32, 33));
}

#[test]
fn non_rst_segments_are_none() {
    for flags in [
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_FIN,
        TCP_FIN | TCP_ACK,
        TCP_PSH | TCP_ACK,
        0,
        !TCP_RST,
    ] {
        assert_none("v4", &Frame::tcp4(flags));
        assert_none("v6", &Frame::tcp6(flags));
        assert_none(
            "v6 qinq ext",
            &Frame::tcp6(flags)
                .with_vlans(&[Vlan::dot1ad(1), Vlan::dot1q(2)])
                .with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 0 }, Ext6::AH]),
        );
    }
}

/// The fixed-offset pre-filter decides the frames nearly every packet is (so the XDP
/// entry ends there) and leaves every RST, SYN and unusual layout to the walk.
#[test]
fn surely_not_rules_out_the_common_frames_only() {
    let syn_rst = TCP_RST | TCP_SYN;
    for flags in [TCP_ACK, TCP_PSH | TCP_ACK, TCP_FIN | TCP_ACK, 0] {
        assert!(ruled_out(&Frame::tcp4(flags), syn_rst), "v4 {flags:#x}");
        assert!(ruled_out(&Frame::tcp6(flags), syn_rst), "v6 {flags:#x}");
        for tag in [Vlan::dot1q(7), Vlan::dot1ad(7)] {
            let f = Frame::tcp6(flags).with_vlans(&[tag]);
            assert!(ruled_out(&f, syn_rst), "tagged v6 {flags:#x}");
            assert!(ruled_out(&Frame::tcp4(flags).with_vlans(&[tag]), syn_rst));
        }
        // To the walk: a second tag, IPv4 options, an extension header.
        let qinq = Frame::tcp4(flags).with_vlans(&[Vlan::dot1ad(1), Vlan::dot1q(2)]);
        assert!(!ruled_out(&qinq, syn_rst), "qinq {flags:#x}");
        let opts = Frame::tcp4(flags).with_ipv4(|ip| ip.options = vec![1, 1, 1, 0]);
        assert!(!ruled_out(&opts, syn_rst), "v4 options {flags:#x}");
        let ext = Frame::tcp6(flags).with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 0 }]);
        assert!(!ruled_out(&ext, syn_rst), "v6 hop-by-hop {flags:#x}");
    }
    for flags in [TCP_RST, TCP_RST | TCP_ACK, TCP_SYN, TCP_SYN | TCP_ACK] {
        assert!(!ruled_out(&Frame::tcp4(flags), syn_rst), "v4 {flags:#x}");
        assert!(!ruled_out(&Frame::tcp6(flags), syn_rst), "v6 {flags:#x}");
    }
    // A SYN is ruled out when only RSTs are asked for.
    assert!(ruled_out(&Frame::tcp4(TCP_SYN), TCP_RST));
    // Not TCP at all.
    let udp = Frame::tcp4(TCP_RST).with_ipv4(|ip| ip.protocol_override = Some(IPPROTO_UDP));
    assert!(ruled_out(&udp, syn_rst));
}

#[test]
fn catalog_frames_parse_as_built() {
    let cat = catalog();
    assert!(cat.len() > 100);
    for (name, f) in &cat {
        let b = f.build();
        let want = expected(&b, family_of(f), flags_of(f), f.vlans.len() as u8);
        assert_eq!(assert_agrees(name, &b.bytes), want, "{name}");
    }
}

#[test]
fn ipv4_options_every_ihl() {
    for words in 0..=10usize {
        let f = rst4().with_ipv4(|ip| ip.options = vec![1; words * 4]);
        let r = assert_found(&format!("ihl {}", 5 + words), &f);
        assert_eq!(r.l4, 14 + 20 + words * 4);
    }
    // Real options: router alert, record route (padded), timestamp option.
    for opts in [
        vec![0x94, 4, 0, 0],
        vec![7, 7, 4, 0, 0, 0, 0],
        vec![0x44, 12, 5, 0, 0, 0, 0, 1, 0, 0, 0, 2],
    ] {
        let f = rst4().with_ipv4(|ip| ip.options = opts.clone());
        assert_found(&format!("options {opts:02x?}"), &f);
    }
}

#[test]
fn ipv6_each_extension_header() {
    let exts = [
        Ext6::HopByHop { len: 0 },
        Ext6::HopByHop { len: 5 },
        Ext6::Routing {
            len: 0,
            segments_left: 0,
        },
        Ext6::Routing {
            len: 4,
            segments_left: 2,
        },
        Ext6::DestOpts { len: 0 },
        Ext6::DestOpts { len: 3 },
        Ext6::FIRST_FRAGMENT,
        // An atomic fragment (offset 0, no more fragments).
        Ext6::Fragment {
            offset: 0,
            more: false,
            id: 7,
        },
        Ext6::AH,
        Ext6::Ah {
            len: 1,
            spi: 1,
            seq: 1,
        },
    ];
    for ext in exts {
        let f = rst6().with_ipv6(|ip| ip.ext = vec![ext]);
        let r = assert_found(&format!("{ext:?}"), &f);
        assert_eq!(r.l4, 14 + 40 + ext.size(), "{ext:?}");
        // Behind two VLAN tags, with payload and options.
        let f = f
            .with_vlans(&[Vlan::dot1ad(5), Vlan::dot1q(6)])
            .with_tcp(|t| {
                t.options = Tcp::timestamp_options(3, 4);
                t.payload = vec![9; 10];
            });
        let r = assert_found(&format!("{ext:?} qinq"), &f);
        assert_eq!((r.l4, r.payload_len), (22 + 40 + ext.size(), 10));
    }
}

#[test]
fn ipv6_extension_header_chains() {
    use Ext6::*;
    let hbh = HopByHop { len: 0 };
    let rt = Routing {
        len: 2,
        segments_left: 1,
    };
    let dst = DestOpts { len: 1 };
    let (frag, ah) = (Ext6::FIRST_FRAGMENT, Ext6::AH);
    let chains: Vec<Vec<Ext6>> = vec![
        vec![hbh, dst],
        vec![hbh, rt, frag],
        vec![hbh, dst, rt, frag, ah, dst],
        vec![ah, dst],
        vec![frag, ah],
        vec![dst, dst, dst, dst, dst, dst],
    ];
    for chain in chains {
        let len: usize = chain.iter().map(Ext6::size).sum();
        let f = rst6().with_ipv6(|ip| ip.ext = chain.clone());
        let r = assert_found(&format!("{chain:?}"), &f);
        assert_eq!(r.l4, 54 + len);
    }
    // One header more than the walk allows.
    assert_none(
        "7 headers",
        &rst6().with_ipv6(|ip| ip.ext = vec![DestOpts { len: 0 }; MAX_EXT_HDRS + 1]),
    );
    // The furthest TCP header (DestOpts grow in 8-byte units) is counted, one unit more is not.
    let room = (MAX_L4_OFFSET - 54) / 8 - 1;
    let r = assert_found(
        "at max offset",
        &rst6().with_ipv6(|ip| ip.ext = vec![DestOpts { len: room as u8 }]),
    );
    assert!(
        r.l4 <= MAX_L4_OFFSET && r.l4 + 8 > MAX_L4_OFFSET,
        "l4 {}",
        r.l4
    );
    assert_none(
        "past max offset",
        &rst6().with_ipv6(|ip| {
            ip.ext = vec![DestOpts {
                len: room as u8 + 1,
            }]
        }),
    );
    assert_none(
        "far past max offset",
        &rst6().with_ipv6(|ip| ip.ext = vec![DestOpts { len: 255 }]),
    );
}

#[test]
fn vlan_single_and_double_tags() {
    let tag_sets: [&[Vlan]; 6] = [
        &[Vlan::dot1q(1)],
        &[Vlan::dot1ad(4094)],
        &[Vlan::dot1ad(10), Vlan::dot1q(20)],
        &[Vlan::dot1q(10), Vlan::dot1q(20)],
        &[Vlan::dot1q(10), Vlan::dot1ad(20)],
        &[Vlan::dot1ad(0xffff), Vlan::dot1ad(0)],
    ];
    for tags in tag_sets {
        for base in [rst4(), rst6()] {
            let f = base.with_vlans(tags);
            let r = assert_found(&format!("{tags:?}"), &f);
            assert_eq!(
                (r.l3, r.vlan_depth as usize),
                (14 + 4 * tags.len(), tags.len())
            );
            let ev = sample(&f.build().bytes).unwrap();
            assert_eq!(ev.vlan_depth as usize, tags.len());
        }
    }
    // A third tag is past the walk.
    let three = [Vlan::dot1ad(1), Vlan::dot1q(2), Vlan::dot1q(3)];
    assert_none("3 tags v4", &rst4().with_vlans(&three));
    assert_none("3 tags v6", &rst6().with_vlans(&three));
    // Tagged non-IP.
    let mut arp = rst4().with_vlans(&[Vlan::dot1q(1)]);
    arp.ethertype_override = Some(ETH_P_ARP);
    assert_none("tagged arp", &arp);
}

#[test]
fn non_first_fragments_are_never_counted() {
    for offset in [1u16, 2, 100, 0x1fff] {
        for more in [false, true] {
            for flags in [TCP_RST, TCP_RST | TCP_ACK] {
                let f = Frame::tcp4(flags).with_ipv4(|ip| {
                    ip.dont_fragment = false;
                    ip.more_fragments = more;
                    ip.frag_offset = offset;
                });
                assert_none(&format!("v4 offset {offset} more {more}"), &f);
                let frag = Ext6::Fragment {
                    offset,
                    more,
                    id: 1,
                };
                let f = Frame::tcp6(flags).with_ipv6(|ip| ip.ext = vec![frag]);
                assert_none(&format!("v6 offset {offset} more {more}"), &f);
                let f = Frame::tcp6(flags)
                    .with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 0 }, frag, Ext6::AH]);
                assert_none(&format!("v6 chain offset {offset} more {more}"), &f);
            }
        }
    }
    // First fragments carry the TCP header and are counted.
    assert_found(
        "v4 first fragment",
        &rst4().with_ipv4(|ip| {
            ip.dont_fragment = false;
            ip.more_fragments = true;
        }),
    );
    assert_found(
        "v6 first fragment",
        &rst6().with_ipv6(|ip| ip.ext = vec![Ext6::FIRST_FRAGMENT]),
    );
}

// --- truncated and malformed frames -------------------------------------------------------

#[test]
fn truncated_at_every_byte_of_every_layer() {
    for (name, f) in catalog() {
        let b = f.build();
        let full = parse(&b.bytes);
        for (len, prefix) in b.prefixes().enumerate() {
            let got = assert_agrees(&format!("{name} cut at {len}"), prefix);
            if len < b.payload || full.is_none() {
                // Cut inside a header (TCP options included), or not an RST at all.
                assert_eq!(got, None, "{name} cut at {len}: counted");
            } else {
                // Only payload is missing: the length fields still describe the segment.
                assert_eq!(got, full, "{name} cut at {len} in the payload");
            }
        }
    }
}

#[test]
fn ipv4_ihl_below_5_is_none() {
    for ihl in 0..5 {
        assert_none(
            &format!("ihl {ihl}"),
            &rst4().with_ipv4(|ip| ip.ihl_override = Some(ihl)),
        );
    }
    // An IHL larger than the header actually written moves the TCP header: nothing valid.
    assert_none(
        "ihl 15, no options",
        &rst4().with_ipv4(|ip| ip.ihl_override = Some(15)),
    );
}

#[test]
fn tcp_data_offset_below_5_or_past_the_end_is_none() {
    for doff in 0..5 {
        let name = format!("doff {doff}");
        assert_none(
            &name,
            &rst4().with_tcp(|t| t.data_offset_override = Some(doff)),
        );
        assert_none(
            &name,
            &rst6().with_tcp(|t| t.data_offset_override = Some(doff)),
        );
    }
    // Options that the frame does not hold, with the IP length fields claiming them.
    for doff in 6..=15u8 {
        let mut f = rst4().with_tcp(|t| t.data_offset_override = Some(doff));
        let f4 = f.clone().build();
        let claimed = (f4.bytes.len() - f4.l3) as u16 + (doff as u16 - 5) * 4;
        f = f.with_ipv4(|ip| ip.total_len_override = Some(claimed));
        assert_none(&format!("doff {doff} past the end"), &f);
    }
}

#[test]
fn ip_length_fields_shorter_than_the_headers_are_none() {
    let v4 = rst4().with_tcp(|t| t.options = Tcp::timestamp_options(1, 1));
    let v4 = v4.with_ipv4(|ip| ip.options = vec![1; 8]);
    // IHL 7 (28 bytes) + TCP 32 bytes = 60.
    for tot in [0u16, 19, 27, 28, 40, 59] {
        assert_none(
            &format!("v4 total length {tot}"),
            &v4.clone().with_ipv4(|ip| ip.total_len_override = Some(tot)),
        );
    }
    let r = assert_found("v4 exact", &v4);
    assert_eq!(r.payload_len, 0);

    let v6 = rst6()
        .with_tcp(|t| t.options = Tcp::timestamp_options(1, 1))
        .with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 1 }, Ext6::AH]);
    // 16 + 24 bytes of extension headers + TCP 32 bytes = 72.
    for plen in [0u16, 15, 39, 40, 71] {
        assert_none(
            &format!("v6 payload length {plen}"),
            &v6.clone()
                .with_ipv6(|ip| ip.payload_len_override = Some(plen)),
        );
    }
    let r = assert_found("v6 exact", &v6);
    assert_eq!(r.payload_len, 0);
}

#[test]
fn payload_len_comes_from_the_ip_length_fields() {
    // Ethernet padding after a short segment is not payload.
    let mut b = rst4().build();
    b.bytes.extend_from_slice(&[0; 6]);
    assert_eq!(parse(&b.bytes).unwrap().payload_len, 0);
    // A length field claiming more than the frame holds (a capture cut short).
    let f = rst6().with_ipv6(|ip| ip.payload_len_override = Some(1000));
    let r = parse(&f.build().bytes).unwrap();
    assert_eq!(r.payload_len, 980);
    let f = rst4().with_ipv4(|ip| ip.total_len_override = Some(0xffff));
    assert_eq!(parse(&f.build().bytes).unwrap().payload_len, 0xffff - 40);
}

#[test]
fn non_tcp_protocols_are_none() {
    // The bytes of a TCP RST behind the wrong protocol number are not counted.
    let rst_bytes = rst4().build().bytes[34..].to_vec();
    for proto in [
        IPPROTO_UDP,
        IPPROTO_ICMP,
        IPPROTO_GRE,
        IPPROTO_ESP,
        IPPROTO_AH,
        0,
        255,
    ] {
        let f = rst4().with_ipv4(|ip| ip.protocol_override = Some(proto));
        assert_none(&format!("v4 proto {proto}"), &f);
        let f = rst4().with_other_l4(proto, &rst_bytes);
        assert_none(&format!("v4 other {proto}"), &f);
    }
    for proto in [IPPROTO_UDP, IPPROTO_ICMPV6, IPPROTO_NONE, IPPROTO_ESP, 255] {
        let f = rst6().with_ipv6(|ip| ip.protocol_override = Some(proto));
        assert_none(&format!("v6 proto {proto}"), &f);
        let f = rst6().with_ipv6(|ip| {
            ip.ext = vec![Ext6::HopByHop { len: 0 }];
            ip.protocol_override = Some(proto);
        });
        assert_none(&format!("v6 hbh then proto {proto}"), &f);
    }
    for ethertype in [ETH_P_ARP, 0x0000, 0x88cc, 0x8847, ETH_P_IPV6] {
        let mut f = rst4();
        f.ethertype_override = Some(ethertype);
        assert_none(&format!("v4 behind ethertype {ethertype:#06x}"), &f);
    }
    let mut f = rst6();
    f.ethertype_override = Some(ETH_P_IP);
    assert_none("v6 behind the IPv4 ethertype", &f);
}

#[test]
fn wrong_ip_version_is_none() {
    for v in [0, 5, 6, 15] {
        assert_none(
            &format!("v4 version {v}"),
            &rst4().with_ipv4(|ip| ip.version_override = Some(v)),
        );
    }
    for v in [0, 4, 7, 15] {
        assert_none(
            &format!("v6 version {v}"),
            &rst6().with_ipv6(|ip| ip.version_override = Some(v)),
        );
    }
}

// --- samples ------------------------------------------------------------------------------

#[test]
fn fill_sample_ipv4_fields_exact() {
    let f = example_rst_v4();
    let ev = sample(&f.build().bytes).expect("an RST");
    let mut want = empty_event();
    want.kind = EVENT_WIRE;
    want.family = FAMILY_IPV4;
    want.tcp_flags = TCP_RST | TCP_ACK;
    want.ttl = 37;
    want.saddr[..4].copy_from_slice(&[10, 1, 2, 3]);
    want.daddr[..4].copy_from_slice(&[172, 16, 254, 1]);
    want.sport = 443;
    want.dport = 51234;
    want.seq = 0xdead_beef;
    want.ack = 0x0102_0304;
    want.window = 502;
    want.ip_id = 0xbeef;
    want.payload_len = 5;
    want.has_ts = 1;
    want.vlan_depth = 1;
    assert_eq!(ev, want);
}

#[test]
fn fill_sample_ipv6_fields_exact() {
    let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let dst = [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
    ];
    let f = Frame::tcp6(TCP_RST)
        .with_vlans(&[Vlan::dot1ad(100), Vlan::dot1q(200)])
        .with_ipv6(|ip| {
            ip.src = src;
            ip.dst = dst;
            ip.hop_limit = 255;
            ip.ext = vec![Ext6::HopByHop { len: 0 }, Ext6::FIRST_FRAGMENT];
        })
        .with_tcp(|t| {
            t.sport = 1;
            t.dport = 65535;
            t.seq = 7;
            t.ack = 0;
            t.window = 0;
            t.options = vec![TcpOpt::Mss(1220)];
            t.payload = vec![0; 300];
        });
    let ev = sample(&f.build().bytes).expect("an RST");
    let mut want = empty_event();
    want.kind = EVENT_WIRE;
    want.family = FAMILY_IPV6;
    want.tcp_flags = TCP_RST;
    want.ttl = 255;
    want.saddr = src;
    want.daddr = dst;
    want.sport = 1;
    want.dport = 65535;
    want.seq = 7;
    want.payload_len = 300;
    want.vlan_depth = 2;
    assert_eq!(ev, want);
}

#[test]
fn fill_sample_ipv4_clears_the_upper_address_bytes() {
    let b = rst4().build();
    let start = b.bytes.as_ptr() as usize;
    let rst = parse(&b.bytes).unwrap();
    let mut ev = empty_event();
    ev.saddr = [0xff; 16];
    ev.daddr = [0xff; 16];
    rst_common::parse::fill_sample(start, start + b.bytes.len(), &rst, &mut ev).unwrap();
    assert_eq!(ev.saddr[4..], [0; 12]);
    assert_eq!(ev.daddr[4..], [0; 12]);
}

#[test]
fn has_ts_table() {
    use TcpOpt::*;
    let ts = Timestamp { val: 1, ecr: 2 };
    let cases: Vec<(&str, Vec<TcpOpt>, Vec<u8>, u8)> = vec![
        ("no options", vec![], vec![], 0),
        ("mss", vec![Mss(1460)], vec![], 0),
        ("nop nop ts", vec![Nop, Nop, ts.clone()], vec![], 1),
        ("ts first", vec![ts.clone()], vec![], 1),
        (
            "syn-style",
            vec![Mss(1460), SackPermitted, ts.clone(), Nop, WindowScale(7)],
            vec![],
            1,
        ),
        (
            "sack block then ts",
            vec![
                Nop,
                Nop,
                Raw(vec![5, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
                ts.clone(),
            ],
            vec![],
            1,
        ),
        ("eol before ts", vec![Eol, Nop, ts.clone()], vec![], 0),
        (
            "zero-length option before ts",
            vec![Raw(vec![30, 0]), ts.clone()],
            vec![],
            0,
        ),
        (
            "one-length option before ts",
            vec![Raw(vec![30, 1]), ts.clone()],
            vec![],
            0,
        ),
        // Malformed timestamps: Linux ignores a timestamp option unless its length is 10
        // and it lies inside the TCP header.
        (
            "ts length 8",
            vec![Raw(vec![8, 8, 0, 0, 0, 1, 0, 0]), Nop, Nop, Nop, Nop],
            vec![],
            0,
        ),
        ("ts length 2", vec![Raw(vec![8, 2]), Nop, Nop], vec![], 0),
        (
            "ts cut by the data offset",
            vec![Nop, Nop, Nop, Raw(vec![8])],
            vec![10; 12],
            0,
        ),
        (
            "ts overrunning the header",
            vec![Mss(1460), Raw(vec![8, 10, 0, 0])],
            vec![0; 8],
            0,
        ),
        (
            "ts in payload only",
            vec![Nop, Nop, Nop, Nop],
            vec![8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            0,
        ),
        (
            "options past a skipped option",
            vec![Raw(vec![30, 6, 0, 0, 0, 0]), Nop, Nop, ts.clone()],
            vec![],
            1,
        ),
    ];
    for (name, options, payload, want) in cases {
        for base in [rst4(), rst6().with_vlans(&[Vlan::dot1q(3)])] {
            let f = base.with_tcp(|t| {
                t.options = options.clone();
                t.payload = payload.clone();
            });
            let bytes = f.build().bytes;
            let ev = sample(&bytes).unwrap_or_else(|| panic!("{name}: not found"));
            assert_eq!(ev.has_ts, want, "{name}: {bytes:02x?}");
            assert_agrees(name, &bytes);
        }
    }
}

// --- fuzz ---------------------------------------------------------------------------------

/// 100k random and mutated frames: the parser never panics, never reads past the end,
/// and agrees with the reference, sample included.
#[test]
fn fuzz_against_the_reference() {
    let bases: Vec<Vec<u8>> = catalog().iter().map(|(_, f)| f.build().bytes).collect();
    let mut rng = Rng::new(0x5eed_2024_0bad_cafe);
    let (mut found, mut total) = (0, 0);
    for i in 0..100_000 {
        let mut frame = if rng.below(10) == 0 {
            // Random bytes behind an IP, IPv6 or VLAN EtherType.
            let len = rng.below(160);
            let mut f: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if len >= 14 {
                let et = [ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD][rng.below(4)];
                f[12..14].copy_from_slice(&et.to_be_bytes());
            }
            f
        } else {
            bases[rng.below(bases.len())].clone()
        };
        mutate(&mut rng, &mut frame);
        total += 1;
        if assert_agrees(&format!("fuzz #{i}"), &frame).is_some() {
            found += 1;
        }
    }
    // The loop must reach the RST path often enough to mean something.
    assert!(
        found > total / 10,
        "only {found} of {total} fuzzed frames were RSTs"
    );
}
