//! The layers of a [`super::Frame`]: VLAN tags, IPv4 and IPv6 (with extension headers),
//! TCP (with options), or another transport protocol.

use rst_common::{
    IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_TCP,
    TCP_RST,
    parse::{ETH_P_8021AD, ETH_P_8021Q},
};

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

    pub(super) fn write(&self, next: u8, out: &mut Vec<u8>) {
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
    pub(super) fn write(&self, out: &mut Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
