//! Laying a [`Frame`] out as bytes, with correct lengths and checksums unless overridden.

use rst_common::parse::{ETH_P_IP, ETH_P_IPV6};

use super::{Ext6, Ip, Ipv4, Ipv6, L4, Tcp, Vlan};

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

/// The Internet checksum of `bytes`: 0 over a header that carries a correct one.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    checksum(sum16(0, bytes))
}

#[cfg(test)]
mod tests {
    use rst_common::{IPPROTO_TCP, TCP_RST};

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
}
