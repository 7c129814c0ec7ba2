//! Ready-made frames: the fixture of the field-by-field sample tests and the shared
//! corpus of the parser tests and the XDP test runs.

use rst_common::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

use super::{Ext6, Frame, Tcp, TcpOpt, Vlan};

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
