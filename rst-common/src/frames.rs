//! Hand-built Ethernet frames for tests and benchmarks (cargo feature `frames`, which
//! brings in `alloc`; the rest of the crate stays `no_std` without it).
//!
//! A [`Frame`] describes a frame layer by layer with public fields. The constructors
//! ([`Frame::tcp4`], [`Frame::tcp6`]) give a well-formed TCP segment, the `with_*`
//! methods change one layer, and [`Frame::build`] lays the bytes out with correct length
//! fields and checksums and says where each layer starts ([`Built`]). Fields named
//! `*_override` write the given value instead of the computed one, to make malformed
//! frames; [`Built::truncated`] and [`Built::prefixes`] cut frames short.
//!
//! [`parse`] and [`sample`] run the real parser ([`crate::parse`]) on a byte slice,
//! the way the XDP program runs it on packet memory.

extern crate alloc;

use alloc::{string::String, vec, vec::Vec};

use crate::{
    TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, WireEvent,
    parse::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, Rst, fill_sample, parse_rst},
};

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const ETH_P_ARP: u16 = 0x0806;

/// One VLAN tag: its TPID (0x8100 or 0x88a8) and TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    pub tpid: u16,
    pub tci: u16,
}

impl Vlan {
    /// An 802.1Q (customer) tag.
    pub const fn dot1q(vid: u16) -> Self {
        Self {
            tpid: ETH_P_8021Q,
            tci: vid,
        }
    }

    /// An 802.1ad (service, QinQ outer) tag.
    pub const fn dot1ad(vid: u16) -> Self {
        Self {
            tpid: ETH_P_8021AD,
            tci: vid,
        }
    }
}

/// An IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub tos: u8,
    pub id: u16,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub frag_offset: u16,
    /// Option bytes, padded with zeros (end of option list) to a multiple of 4.
    pub options: Vec<u8>,
    pub version_override: Option<u8>,
    /// IHL in 4-byte words (4 bits); the header bytes written do not change.
    pub ihl_override: Option<u8>,
    pub total_len_override: Option<u16>,
    /// The protocol number, instead of the one of the [`L4`] layer.
    pub protocol_override: Option<u8>,
}

impl Default for Ipv4 {
    fn default() -> Self {
        Self {
            src: [192, 0, 2, 1],
            dst: [198, 51, 100, 2],
            tos: 0,
            id: 0x1234,
            ttl: 64,
            dont_fragment: true,
            more_fragments: false,
            frag_offset: 0,
            options: Vec::new(),
            version_override: None,
            ihl_override: None,
            total_len_override: None,
            protocol_override: None,
        }
    }
}

/// An IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext6 {
    /// Hop-by-hop options: `(len + 1) * 8` bytes, the options area filled with PadN.
    HopByHop { len: u8 },
    /// Routing header (type 4, segment routing): `(len + 1) * 8` bytes.
    Routing { len: u8, segments_left: u8 },
    /// Destination options: `(len + 1) * 8` bytes, the options area filled with PadN.
    DestOpts { len: u8 },
    /// Fragment header: `offset` in 8-byte units (13 bits); 8 bytes.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header: `(len + 2) * 4` bytes.
    Ah { len: u8, spi: u32, seq: u32 },
}

impl Ext6 {
    /// The first fragment of a fragmented packet.
    pub const FIRST_FRAGMENT: Self = Self::Fragment {
        offset: 0,
        more: true,
        id: 0xdead_beef,
    };
    /// AH with a 96-bit ICV (24 bytes).
    pub const AH: Self = Self::Ah {
        len: 4,
        spi: 0x100,
        seq: 1,
    };

    /// The protocol number that announces this header.
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => IPPROTO_HOPOPTS,
            Self::Routing { .. } => IPPROTO_ROUTING,
            Self::DestOpts { .. } => IPPROTO_DSTOPTS,
            Self::Fragment { .. } => IPPROTO_FRAGMENT,
            Self::Ah { .. } => IPPROTO_AH,
        }
    }

    /// Length in bytes.
    pub const fn size(&self) -> usize {
        match *self {
            Self::HopByHop { len } | Self::Routing { len, .. } | Self::DestOpts { len } => {
                (len as usize + 1) * 8
            }
            Self::Fragment { .. } => 8,
            Self::Ah { len, .. } => (len as usize + 2) * 4,
        }
    }

    fn write(&self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match *self {
            Self::HopByHop { len } | Self::DestOpts { len } => {
                out.extend_from_slice(&[next, len]);
                pad_n(out, self.size() - 2);
            }
            Self::Routing { len, segments_left } => {
                out.extend_from_slice(&[next, len, 4, segments_left]);
                out.resize(start + self.size(), 0);
            }
            Self::Fragment { offset, more, id } => {
                let off = (offset << 3) | more as u16;
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&off.to_be_bytes());
                out.extend_from_slice(&id.to_be_bytes());
            }
            Self::Ah { len, spi, seq } => {
                out.extend_from_slice(&[next, len, 0, 0]);
                out.extend_from_slice(&spi.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                // A header shorter than its fixed part is malformed: write what `len` says.
                out.resize(start + self.size(), 0xa5);
            }
        }
        out.truncate(start + self.size());
    }
}

/// Fills `n` bytes with IPv6 PadN options (Pad1 for a single byte).
fn pad_n(out: &mut Vec<u8>, mut n: usize) {
    while n > 0 {
        if n == 1 {
            out.push(0);
            return;
        }
        let chunk = n.min(257);
        let chunk = if n - chunk == 1 { chunk - 1 } else { chunk };
        out.extend_from_slice(&[1, (chunk - 2) as u8]);
        out.resize(out.len() + chunk - 2, 0);
        n -= chunk;
    }
}

/// An IPv6 header and its extension headers, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
    pub hop_limit: u8,
    pub ext: Vec<Ext6>,
    pub version_override: Option<u8>,
    pub payload_len_override: Option<u16>,
    /// The fixed header's next-header field, instead of the computed one.
    pub next_header_override: Option<u8>,
    /// The last header's next-header field, instead of the one of the [`L4`] layer.
    pub protocol_override: Option<u8>,
}

impl Default for Ipv6 {
    fn default() -> Self {
        Self {
            src: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            traffic_class: 0,
            flow_label: 0x12345,
            hop_limit: 64,
            ext: Vec::new(),
            version_override: None,
            payload_len_override: None,
            next_header_override: None,
            protocol_override: None,
        }
    }
}

/// The network layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ip {
    V4(Ipv4),
    V6(Ipv6),
}

/// A TCP option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpOpt {
    Eol,
    Nop,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    Timestamp {
        val: u32,
        ecr: u32,
    },
    /// Bytes written as they are (kind, length and data).
    Raw(Vec<u8>),
}

impl TcpOpt {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Eol => out.push(0),
            Self::Nop => out.push(1),
            Self::Mss(mss) => {
                out.extend_from_slice(&[2, 4]);
                out.extend_from_slice(&mss.to_be_bytes());
            }
            Self::WindowScale(shift) => out.extend_from_slice(&[3, 3, *shift]),
            Self::SackPermitted => out.extend_from_slice(&[4, 2]),
            Self::Timestamp { val, ecr } => {
                out.extend_from_slice(&[8, 10]);
                out.extend_from_slice(&val.to_be_bytes());
                out.extend_from_slice(&ecr.to_be_bytes());
            }
            Self::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// A TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// `TCP_*` bits (CWR and ECE included).
    pub flags: u8,
    pub window: u16,
    pub urgent: u16,
    /// Written in order, padded with zeros (end of option list) to a multiple of 4.
    pub options: Vec<TcpOpt>,
    pub payload: Vec<u8>,
    /// Data offset in 4-byte words (4 bits); the header bytes written do not change.
    pub data_offset_override: Option<u8>,
}

impl Default for Tcp {
    fn default() -> Self {
        Self {
            sport: 40000,
            dport: 80,
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
            flags: TCP_RST,
            window: 0,
            urgent: 0,
            options: Vec::new(),
            payload: Vec::new(),
            data_offset_override: None,
        }
    }
}

impl Tcp {
    /// NOP, NOP, timestamp: what Linux puts in a segment of a connection with timestamps.
    pub fn timestamp_options(val: u32, ecr: u32) -> Vec<TcpOpt> {
        vec![TcpOpt::Nop, TcpOpt::Nop, TcpOpt::Timestamp { val, ecr }]
    }
}

/// The transport layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp(Tcp),
    /// Any other protocol: its number and bytes.
    Other {
        protocol: u8,
        bytes: Vec<u8>,
    },
}

impl L4 {
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::Tcp(_) => IPPROTO_TCP,
            Self::Other { protocol, .. } => *protocol,
        }
    }
}

/// An Ethernet frame, layer by layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Outermost first.
    pub vlans: Vec<Vlan>,
    /// The EtherType after the VLAN tags, instead of the one of the IP layer.
    pub ethertype_override: Option<u16>,
    pub ip: Ip,
    pub l4: L4,
}

/// A built frame and where its layers start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header (after any IPv6 extension headers).
    pub l4: usize,
    /// Offset of the TCP payload (or of the end of the frame for another protocol).
    pub payload: usize,
}

impl Built {
    /// The first `len` bytes (all of them if `len` is longer).
    pub fn truncated(&self, len: usize) -> &[u8] {
        &self.bytes[..len.min(self.bytes.len())]
    }

    /// Every proper prefix, from the empty one to all but the last byte.
    pub fn prefixes(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.bytes.len()).map(|len| &self.bytes[..len])
    }
}

impl Frame {
    /// An IPv4 TCP segment with `flags` and no options or payload.
    pub fn tcp4(flags: u8) -> Self {
        Self::new(Ip::V4(Ipv4::default()), flags)
    }

    /// An IPv6 TCP segment with `flags`, no extension headers, options or payload.
    pub fn tcp6(flags: u8) -> Self {
        Self::new(Ip::V6(Ipv6::default()), flags)
    }

    fn new(ip: Ip, flags: u8) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            vlans: Vec::new(),
            ethertype_override: None,
            ip,
            l4: L4::Tcp(Tcp {
                flags,
                ..Tcp::default()
            }),
        }
    }

    pub fn with_vlans(mut self, vlans: &[Vlan]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    /// Changes the TCP layer. Panics if the frame does not carry TCP.
    pub fn with_tcp(mut self, f: impl FnOnce(&mut Tcp)) -> Self {
        match &mut self.l4 {
            L4::Tcp(tcp) => f(tcp),
            L4::Other { .. } => panic!("with_tcp on a frame without TCP"),
        }
        self
    }

    /// Changes the IPv4 header. Panics on an IPv6 frame.
    pub fn with_ipv4(mut self, f: impl FnOnce(&mut Ipv4)) -> Self {
        match &mut self.ip {
            Ip::V4(ip) => f(ip),
            Ip::V6(_) => panic!("with_ipv4 on an IPv6 frame"),
        }
        self
    }

    /// Changes the IPv6 header. Panics on an IPv4 frame.
    pub fn with_ipv6(mut self, f: impl FnOnce(&mut Ipv6)) -> Self {
        match &mut self.ip {
            Ip::V6(ip) => f(ip),
            Ip::V4(_) => panic!("with_ipv6 on an IPv4 frame"),
        }
        self
    }

    /// Replaces the transport layer with `bytes` of another protocol.
    pub fn with_other_l4(mut self, protocol: u8, bytes: &[u8]) -> Self {
        self.l4 = L4::Other {
            protocol,
            bytes: bytes.to_vec(),
        };
        self
    }

    /// The bytes, with correct lengths and checksums unless overridden.
    pub fn build(&self) -> Built {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for v in &self.vlans {
            out.extend_from_slice(&v.tpid.to_be_bytes());
            out.extend_from_slice(&v.tci.to_be_bytes());
        }
        let ethertype = match self.ip {
            Ip::V4(_) => ETH_P_IP,
            Ip::V6(_) => ETH_P_IPV6,
        };
        out.extend_from_slice(&self.ethertype_override.unwrap_or(ethertype).to_be_bytes());
        let l3 = out.len();

        let (mut l4_bytes, l4_hlen) = match &self.l4 {
            L4::Tcp(tcp) => tcp_bytes(tcp),
            L4::Other { bytes, .. } => (bytes.clone(), bytes.len()),
        };
        let l4_len = l4_bytes.len();
        let protocol = self.l4.protocol();
        let pseudo_sum;
        match &self.ip {
            Ip::V4(ip) => {
                let mut opts = ip.options.clone();
                opts.resize(opts.len().next_multiple_of(4), 0);
                let hlen = 20 + opts.len();
                assert!(
                    ip.ihl_override.is_some() || hlen <= 60,
                    "IPv4 options longer than 40 bytes need an ihl_override"
                );
                let ihl = ip.ihl_override.unwrap_or((hlen / 4) as u8) & 0x0f;
                let version = ip.version_override.unwrap_or(4);
                let total = ip.total_len_override.unwrap_or((hlen + l4_len) as u16);
                let frag = (ip.dont_fragment as u16) << 14
                    | (ip.more_fragments as u16) << 13
                    | (ip.frag_offset & 0x1fff);
                let proto = ip.protocol_override.unwrap_or(protocol);
                let mut h = Vec::with_capacity(hlen);
                h.extend_from_slice(&[version << 4 | ihl, ip.tos]);
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&ip.id.to_be_bytes());
                h.extend_from_slice(&frag.to_be_bytes());
                h.extend_from_slice(&[ip.ttl, proto, 0, 0]);
                h.extend_from_slice(&ip.src);
                h.extend_from_slice(&ip.dst);
                h.extend_from_slice(&opts);
                let csum = checksum(sum16(0, &h));
                h[10..12].copy_from_slice(&csum.to_be_bytes());
                out.extend_from_slice(&h);
                let mut ps = sum16(0, &ip.src);
                ps = sum16(ps, &ip.dst);
                pseudo_sum = sum16(ps, &[0, proto, (l4_len >> 8) as u8, l4_len as u8]);
            }
            Ip::V6(ip) => {
                let version = ip.version_override.unwrap_or(6) as u32;
                let first =
                    version << 28 | (ip.traffic_class as u32) << 20 | (ip.flow_label & 0x000f_ffff);
                let ext_len: usize = ip.ext.iter().map(Ext6::size).sum();
                let plen = ip.payload_len_override.unwrap_or((ext_len + l4_len) as u16);
                let last = ip.protocol_override.unwrap_or(protocol);
                let nexts: Vec<u8> = ip
                    .ext
                    .iter()
                    .skip(1)
                    .map(Ext6::protocol)
                    .chain([last])
                    .collect();
                let nh = ip
                    .next_header_override
                    .unwrap_or(ip.ext.first().map_or(last, Ext6::protocol));
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&plen.to_be_bytes());
                out.extend_from_slice(&[nh, ip.hop_limit]);
                out.extend_from_slice(&ip.src);
                out.extend_from_slice(&ip.dst);
                for (ext, next) in ip.ext.iter().zip(nexts) {
                    ext.write(next, &mut out);
                }
                let mut ps = sum16(0, &ip.src);
                ps = sum16(ps, &ip.dst);
                ps = sum16(ps, &(l4_len as u32).to_be_bytes());
                pseudo_sum = sum16(ps, &[0, 0, 0, last]);
            }
        }
        let l4 = out.len();
        if let L4::Tcp(_) = self.l4 {
            let csum = checksum(sum16(pseudo_sum, &l4_bytes));
            l4_bytes[16..18].copy_from_slice(&csum.to_be_bytes());
        }
        out.extend_from_slice(&l4_bytes);
        Built {
            bytes: out,
            l3,
            l4,
            payload: l4 + l4_hlen,
        }
    }
}

/// The TCP header and payload (checksum zero) and the header length.
fn tcp_bytes(tcp: &Tcp) -> (Vec<u8>, usize) {
    let mut opts = Vec::new();
    for o in &tcp.options {
        o.write(&mut opts);
    }
    opts.resize(opts.len().next_multiple_of(4), 0);
    let hlen = 20 + opts.len();
    assert!(
        tcp.data_offset_override.is_some() || hlen <= 60,
        "TCP options longer than 40 bytes need a data_offset_override"
    );
    let doff = tcp.data_offset_override.unwrap_or((hlen / 4) as u8) & 0x0f;
    let mut b = Vec::with_capacity(hlen + tcp.payload.len());
    b.extend_from_slice(&tcp.sport.to_be_bytes());
    b.extend_from_slice(&tcp.dport.to_be_bytes());
    b.extend_from_slice(&tcp.seq.to_be_bytes());
    b.extend_from_slice(&tcp.ack.to_be_bytes());
    b.extend_from_slice(&[doff << 4, tcp.flags]);
    b.extend_from_slice(&tcp.window.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&tcp.urgent.to_be_bytes());
    b.extend_from_slice(&opts);
    b.extend_from_slice(&tcp.payload);
    (b, hlen)
}

/// One's-complement sum of big-endian 16-bit words (an odd last byte padded with zero).
fn sum16(mut sum: u32, bytes: &[u8]) -> u32 {
    for c in bytes.chunks(2) {
        let hi = (c[0] as u32) << 8;
        let word = hi | c.get(1).copied().unwrap_or(0) as u32;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn checksum(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A fully specified IPv4 RST|ACK behind an 802.1Q tag, with IPv4 options, the TCP
/// timestamp option and 5 bytes of payload: the fixture of the field-by-field sample tests.
pub fn example_rst_v4() -> Frame {
    Frame::tcp4(TCP_RST | TCP_ACK)
        .with_vlans(&[Vlan::dot1q(42)])
        .with_ipv4(|ip| {
            ip.src = [10, 1, 2, 3];
            ip.dst = [172, 16, 254, 1];
            ip.ttl = 37;
            ip.id = 0xbeef;
            ip.options = vec![0x94, 4, 0, 0];
        })
        .with_tcp(|t| {
            t.sport = 443;
            t.dport = 51234;
            t.seq = 0xdead_beef;
            t.ack = 0x0102_0304;
            t.window = 502;
            t.options = Tcp::timestamp_options(0xaaaa, 0xbbbb);
            t.payload = b"hello".to_vec();
        })
}

/// The Internet checksum of `bytes`: 0 over a header that carries a correct one.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    checksum(sum16(0, bytes))
}

/// [`parse_rst`] on a byte slice.
pub fn parse(frame: &[u8]) -> Option<Rst> {
    let start = frame.as_ptr() as usize;
    parse_rst(start, start + frame.len())
}

/// The sample the XDP program submits for `frame`, as [`fill_sample`] fills it
/// (`kind` [`crate::EVENT_WIRE`]; `ifindex`, `ts_ns` and padding 0), or `None` if the
/// frame is not an RST.
pub fn sample(frame: &[u8]) -> Option<WireEvent> {
    let rst = parse(frame)?;
    let start = frame.as_ptr() as usize;
    let mut ev = empty_event();
    ev.kind = crate::EVENT_WIRE;
    fill_sample(start, start + frame.len(), &rst, &mut ev)?;
    Some(ev)
}

/// A [`WireEvent`] with every field 0.
pub const fn empty_event() -> WireEvent {
    WireEvent {
        kind: 0,
        family: 0,
        tcp_flags: 0,
        ttl: 0,
        ifindex: 0,
        ts_ns: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        window: 0,
        ip_id: 0,
        payload_len: 0,
        has_ts: 0,
        vlan_depth: 0,
        _pad: [0; 4],
    }
}

/// The flag sets worth trying on every layout: RSTs and the common non-RST segments.
pub const FLAG_SETS: &[u8] = &[
    TCP_RST,
    TCP_RST | TCP_ACK,
    TCP_SYN,
    TCP_SYN | TCP_ACK,
    TCP_ACK,
    TCP_FIN | TCP_ACK,
    TCP_PSH | TCP_ACK,
    0,
    0xff,
];

/// A named set of frames covering the layouts the parser must handle (VLAN tags,
/// IPv4 options, IPv6 extension headers, TCP options, payload), each with every flag
/// set in [`FLAG_SETS`]: the shared corpus of the parser tests and the XDP test runs.
pub fn catalog() -> Vec<(String, Frame)> {
    use alloc::format;

    let ts = Tcp::timestamp_options(0x1122_3344, 0x5566_7788);
    let layouts: Vec<(&str, Frame)> = vec![
        ("v4", Frame::tcp4(0)),
        (
            "v4 ts+payload",
            Frame::tcp4(0).with_tcp(|t| {
                t.options = ts.clone();
                t.payload = vec![0xab; 7];
            }),
        ),
        (
            "v4 ipopts(rr)+mss",
            Frame::tcp4(0)
                .with_ipv4(|ip| ip.options = vec![7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0])
                .with_tcp(|t| t.options = vec![TcpOpt::Mss(1460)]),
        ),
        (
            "v4 ihl15",
            Frame::tcp4(0).with_ipv4(|ip| ip.options = vec![1; 40]),
        ),
        (
            "v4 first fragment",
            Frame::tcp4(0).with_ipv4(|ip| {
                ip.dont_fragment = false;
                ip.more_fragments = true;
            }),
        ),
        ("v4 8021q", Frame::tcp4(0).with_vlans(&[Vlan::dot1q(100)])),
        (
            "v4 qinq",
            Frame::tcp4(0)
                .with_vlans(&[Vlan::dot1ad(10), Vlan::dot1q(20)])
                .with_tcp(|t| t.options = ts.clone()),
        ),
        ("v6", Frame::tcp6(0)),
        (
            "v6 ts+payload",
            Frame::tcp6(0).with_tcp(|t| {
                t.options = ts.clone();
                t.payload = vec![0xcd; 5];
            }),
        ),
        ("v6 8021ad", Frame::tcp6(0).with_vlans(&[Vlan::dot1ad(7)])),
        (
            "v6 qq",
            Frame::tcp6(0).with_vlans(&[Vlan::dot1q(1), Vlan::dot1q(2)]),
        ),
        (
            "v6 hbh",
            Frame::tcp6(0).with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 0 }]),
        ),
        (
            "v6 routing",
            Frame::tcp6(0).with_ipv6(|ip| {
                ip.ext = vec![Ext6::Routing {
                    len: 2,
                    segments_left: 0,
                }]
            }),
        ),
        (
            "v6 dstopts",
            Frame::tcp6(0).with_ipv6(|ip| ip.ext = vec![Ext6::DestOpts { len: 1 }]),
        ),
        (
            "v6 first fragment",
            Frame::tcp6(0).with_ipv6(|ip| ip.ext = vec![Ext6::FIRST_FRAGMENT]),
        ),
        (
            "v6 ah",
            Frame::tcp6(0).with_ipv6(|ip| ip.ext = vec![Ext6::AH]),
        ),
        (
            "v6 chain6 qinq ts",
            Frame::tcp6(0)
                .with_vlans(&[Vlan::dot1ad(3), Vlan::dot1q(4)])
                .with_ipv6(|ip| {
                    ip.ext = vec![
                        Ext6::HopByHop { len: 0 },
                        Ext6::DestOpts { len: 0 },
                        Ext6::Routing {
                            len: 0,
                            segments_left: 0,
                        },
                        Ext6::FIRST_FRAGMENT,
                        Ext6::AH,
                        Ext6::DestOpts { len: 2 },
                    ]
                })
                .with_tcp(|t| {
                    t.options = ts.clone();
                    t.payload = vec![1, 2, 3];
                }),
        ),
    ];
    let mut out = Vec::new();
    for (name, frame) in layouts {
        for &flags in FLAG_SETS {
            let f = frame.clone().with_tcp(|t| t.flags = flags);
            out.push((format!("{name} flags={flags:#04x}"), f));
        }
    }
    out
}

/// A small, fast, seeded pseudo-random generator (xorshift64*) for reproducible fuzz
/// loops; not for anything else.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 32) as u8
    }
}

/// Bytes that steer a parser into its interesting branches.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x04, 0x05, 0x06, 0x08, 0x0a, 0x14, 0x1f, 0x20, 0x2b, 0x2c, 0x33, 0x3c, 0x3b, 0x40,
    0x45, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0x81, 0x86, 0x88, 0xa8, 0xdd, 0xf0, 0xff,
];

/// Applies one to four random mutations to `frame`: bit flips, interesting or random
/// bytes (mostly in the first 80 bytes, where the headers are), truncation, extension.
pub fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = frame.len();
        match rng.below(8) {
            0 | 1 if len > 0 => {
                let i = rng.below(len.min(80));
                frame[i] ^= 1 << rng.below(8);
            }
            2 | 3 if len > 0 => {
                let i = rng.below(len.min(80));
                frame[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            4 if len > 0 => {
                let i = rng.below(len);
                frame[i] = rng.byte();
            }
            5 => frame.truncate(rng.below(len + 1)),
            6 => {
                for _ in 0..rng.below(16) {
                    frame.push(rng.byte());
                }
            }
            _ => {
                // Overwrite a 16-bit field: length fields, EtherTypes, fragment offsets.
                if len >= 2 {
                    let i = rng.below(len.min(80) - 1);
                    let v = match rng.below(3) {
                        0 => 0u16,
                        1 => rng.below(80) as u16,
                        _ => rng.next_u64() as u16,
                    };
                    frame[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let b = Frame::tcp4(TCP_RST)
            .with_ipv4(|ip| ip.options = vec![1, 1, 1])
            .build();
        assert_eq!(internet_checksum(&b.bytes[b.l3..b.l4]), 0);
    }

    #[test]
    fn tcp_checksum_verifies() {
        let b = Frame::tcp4(TCP_RST)
            .with_tcp(|t| t.payload = vec![1, 2, 3])
            .build();
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&b.bytes[b.l3 + 12..b.l3 + 20]);
        let tcp_len = (b.bytes.len() - b.l4) as u16;
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&tcp_len.to_be_bytes());
        pseudo.extend_from_slice(&b.bytes[b.l4..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    #[test]
    fn extension_header_lengths() {
        for ext in [
            Ext6::HopByHop { len: 0 },
            Ext6::HopByHop { len: 3 },
            Ext6::DestOpts { len: 255 },
            Ext6::Routing {
                len: 1,
                segments_left: 1,
            },
            Ext6::FIRST_FRAGMENT,
            Ext6::AH,
            Ext6::Ah {
                len: 0,
                spi: 0,
                seq: 0,
            },
        ] {
            let mut out = Vec::new();
            ext.write(IPPROTO_TCP, &mut out);
            assert_eq!(out.len(), ext.size(), "{ext:?}");
            assert_eq!(out[0], IPPROTO_TCP, "{ext:?}");
        }
    }
}
