//! The TC egress program end to end, with the daemon on the interface the RSTs leave
//! by, in namespaces the tests create and remove:
//!
//! * netfilter REJECT (`nft … reject with tcp reset`, in a table of its own in the
//!   server's namespace): sent `firewall_reject` += N, received `refused` += N, wire
//!   egress += N, `no_listener` += 0;
//! * a program writing RSTs through raw IP sockets (IPv4 and IPv6, IPPROTO_RAW) and an
//!   AF_PACKET socket: `raw_socket` += N;
//! * three namespaces, the middle one routing: forwarded += N on the router's interface
//!   towards the client, nothing made there, and the server's own resets counted once
//!   each as `no_listener` (the tracepoints see every namespace);
//! * S1–S7 with the daemon on the sender's interface: every RST the stack sends leaves
//!   once (wire egress +1, origin `stack` +1) and counts as sent once, and the fallback
//!   for untraced resets (`stack_untraced`) and `unmatched` stay at 0;
//! * one connection's RSTs answered on two CPUs at once: every one `stack`.
//!
//! Privileged (root). Run with `--test-threads=1` (`cargo xtask test` does): the
//! tracepoint counters are host-wide, so every assertion is a delta of what the test made.

mod common;

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use common::{BIN, Daemon, Metrics, assert_delta, connect_refused, sum_delta};
use rst_common::TCP_RST;
use rst_testkit::{frames::Frame, net::mac_of};
use rst_user::{
    classify::{Family, SendCause},
    netns::{Ns, Pair},
    selftest::SCENARIOS,
};

const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9747));
/// RSTs per case.
const N: i64 = 5;
/// A port nothing listens on.
const CLOSED_PORT: u16 = 9;
/// The port the firewall rule rejects.
const REJECTED_PORT: u16 = 5555;

const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WIRE: &str = "rstmon_wire_resets_total";
const ORIGIN: &str = "rstmon_egress_resets_total";
const FORWARDED: &str = "rstmon_forwarded_resets_total";
const ORIGINS: [&str; 6] = [
    "stack",
    "stack_untraced",
    "firewall_reject",
    "raw_socket",
    "forwarded",
    "unmatched",
];

static SUBNET: AtomicU32 = AtomicU32::new(0);

fn fam(v6: bool) -> &'static str {
    if v6 { "ipv6" } else { "ipv4" }
}

/// The last segment needs a moment to cross the veth before the scrape.
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// Asserts that `rstmon_egress_resets_total{family}` grew by `want` for the origins
/// in `want` and by 0 for every other one.
fn assert_origins(
    after: &Metrics,
    before: &Metrics,
    family: &str,
    want: &[(&str, i64)],
    ctx: &str,
) {
    for origin in ORIGINS {
        let n = want
            .iter()
            .find(|(o, _)| *o == origin)
            .map_or(0, |(_, n)| *n);
        assert_delta(
            after,
            before,
            ORIGIN,
            &[("origin", origin), ("family", family)],
            n,
            ctx,
        );
    }
}

/// `nft` inside `ns`; panics with its error.
fn nft(ns: &Ns, args: &[&str]) {
    let out = ns
        .output("nft", args)
        .unwrap_or_else(|e| panic!("running nft (cargo xtask setup installs nftables): {e}"));
    assert!(
        out.status.success(),
        "nft {args:?} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A table of the test's own in `ns` with one rule: TCP to `port` is answered by
/// netfilter with an RST (`reject with tcp reset`). Deleted on drop.
struct RejectRule<'a> {
    ns: &'a Ns,
}

const TABLE: &str = "rstmon_egress_test";

impl<'a> RejectRule<'a> {
    fn new(ns: &'a Ns, port: u16) -> Self {
        nft(ns, &["add", "table", "inet", TABLE]);
        let rule = Self { ns };
        nft(
            ns,
            &[
                "add",
                "chain",
                "inet",
                TABLE,
                "input",
                "{ type filter hook input priority 0; }",
            ],
        );
        nft(
            ns,
            &[
                "add",
                "rule",
                "inet",
                TABLE,
                "input",
                "tcp",
                "dport",
                &port.to_string(),
                "reject",
                "with",
                "tcp",
                "reset",
            ],
        );
        rule
    }
}

impl Drop for RejectRule<'_> {
    fn drop(&mut self) {
        let _ = self.ns.output("nft", &["delete", "table", "inet", TABLE]);
    }
}

/// Programs on the tcx egress chain of `iface` in `ns` (Linux 6.6+).
fn tcx_egress_programs(ns: &Ns, iface: &str) -> usize {
    use aya::programs::{SchedClassifier, TcAttachType};
    ns.run(|| SchedClassifier::query_tcx(iface, TcAttachType::Egress))
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("querying the tcx egress chain of {iface}: {e}"))
        .1
        .len()
}

fn firewall_reject(v6: bool) {
    let pair = Pair::new().expect("namespaces and veth pair");
    let family = fam(v6);
    let ctx = format!("nft reject over {family}");
    let d = Daemon::start(BIN, &pair.b, &[&pair.b_if], LISTEN);
    let _rule = RejectRule::new(&pair.b, REJECTED_PORT);
    let to: IpAddr = if v6 { pair.b6.into() } else { pair.b4.into() };
    // Neighbours first (see `forwarded`).
    connect_refused(&pair.a, SocketAddr::new(to, CLOSED_PORT), 1);
    let before = d.scrape();
    connect_refused(&pair.a, SocketAddr::new(to, REJECTED_PORT), N);
    settle();
    let after = d.scrape();
    assert_eq!(
        tcx_egress_programs(&pair.b, &pair.b_if),
        1,
        "{ctx}: rstmon's tcx link"
    );
    d.stop();
    // The link goes with the daemon.
    assert_eq!(
        tcx_egress_programs(&pair.b, &pair.b_if),
        0,
        "{ctx}: tcx egress programs left after the daemon stopped"
    );
    assert_eq!(
        after.value(
            "rstmon_tc_attached",
            &[("interface", pair.b_if.as_str()), ("mode", "tcx")]
        ),
        1.0,
        "{ctx}: rstmon_tc_attached"
    );

    let cf = |cause| [("cause", cause), ("family", family)];
    assert_delta(&after, &before, SENT, &cf("firewall_reject"), N, &ctx);
    assert_delta(&after, &before, SENT, &cf("no_listener"), 0, &ctx);
    assert_delta(&after, &before, SENT, &cf("raw_socket"), 0, &ctx);
    assert_delta(&after, &before, RECEIVED, &cf("refused"), N, &ctx);
    // nf_send_reset answers a SYN with RST|ACK.
    let wire = |dir, flags| {
        [
            ("interface", pair.b_if.as_str()),
            ("family", family),
            ("flags", flags),
            ("direction", dir),
        ]
    };
    assert_delta(&after, &before, WIRE, &wire("egress", "rst_ack"), N, &ctx);
    assert_delta(&after, &before, WIRE, &wire("egress", "rst"), 0, &ctx);
    assert_delta(&after, &before, WIRE, &wire("ingress", "rst_ack"), 0, &ctx);
    assert_origins(&after, &before, family, &[("firewall_reject", N)], &ctx);
}

#[test]
fn firewall_reject_ipv4() {
    firewall_reject(false);
}

#[test]
fn firewall_reject_ipv6() {
    firewall_reject(true);
}

/// How the raw-socket program writes its RSTs.
#[derive(Clone, Copy, Debug)]
enum RawKind {
    /// socket(AF_INET / AF_INET6, SOCK_RAW, IPPROTO_RAW): the IP header comes with the
    /// packet (IP_HDRINCL is implied).
    Ip,
    /// socket(AF_PACKET, SOCK_RAW): the whole Ethernet frame.
    Packet,
    /// The same with PACKET_QDISC_BYPASS: each frame goes out by the device queue of the
    /// sending CPU (a veth receives it on that CPU), not by the queue of its flow hash.
    PacketPerCpu,
}

/// An RST from `pair.b` to a closed port of `pair.a` (its stack drops it silently),
/// as an Ethernet frame with correct checksums.
fn rst_frame(pair: &Pair, v6: bool, sport: u16) -> Vec<u8> {
    let f = if v6 {
        Frame::tcp6(TCP_RST).with_ipv6(|ip| {
            ip.src = pair.b6.octets();
            ip.dst = pair.a6.octets();
        })
    } else {
        Frame::tcp4(TCP_RST).with_ipv4(|ip| {
            ip.src = pair.b4.octets();
            ip.dst = pair.a4.octets();
        })
    };
    let mut f = f.with_tcp(|t| {
        t.sport = sport;
        t.dport = CLOSED_PORT;
        t.seq = 1000 + u32::from(sport);
    });
    f.dst_mac = mac_of(&pair.a, &pair.a_if).expect("MAC of a");
    f.src_mac = mac_of(&pair.b, &pair.b_if).expect("MAC of b");
    f.build().bytes
}

/// Sends `frames` through a socket of `kind`, from the calling thread's namespace.
fn send_raw(kind: RawKind, v6: bool, ifindex: u32, frames: &[Vec<u8>]) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain socket calls with valid, initialised arguments; the fd is closed.
    unsafe {
        let fd = match kind {
            RawKind::Ip => check(libc::socket(
                if v6 { libc::AF_INET6 } else { libc::AF_INET },
                libc::SOCK_RAW,
                libc::IPPROTO_RAW,
            ))?,
            RawKind::Packet | RawKind::PacketPerCpu => check(libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            ))?,
        };
        if let RawKind::PacketPerCpu = kind {
            let on: libc::c_int = 1;
            check(libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as u32,
            ))?;
        }
        let mut result = Ok(());
        let mut full = 0u32;
        let mut i = 0;
        while let Some(frame) = frames.get(i) {
            let r = match kind {
                RawKind::Ip => {
                    let packet = &frame[14..];
                    if v6 {
                        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                        sa.sin6_family = libc::AF_INET6 as u16;
                        sa.sin6_addr.s6_addr.copy_from_slice(&packet[24..40]);
                        libc::sendto(
                            fd,
                            packet.as_ptr().cast(),
                            packet.len(),
                            0,
                            (&raw const sa).cast(),
                            size_of::<libc::sockaddr_in6>() as u32,
                        )
                    } else {
                        let mut sa: libc::sockaddr_in = std::mem::zeroed();
                        sa.sin_family = libc::AF_INET as u16;
                        sa.sin_addr.s_addr =
                            u32::from_ne_bytes(packet[16..20].try_into().expect("4 bytes"));
                        libc::sendto(
                            fd,
                            packet.as_ptr().cast(),
                            packet.len(),
                            0,
                            (&raw const sa).cast(),
                            size_of::<libc::sockaddr_in>() as u32,
                        )
                    }
                }
                RawKind::Packet | RawKind::PacketPerCpu => {
                    let mut sa: libc::sockaddr_ll = std::mem::zeroed();
                    sa.sll_family = libc::AF_PACKET as u16;
                    sa.sll_ifindex = ifindex as i32;
                    sa.sll_halen = 6;
                    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const sa).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                }
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                // A full device queue (ENOBUFS) under a flood: the frame again, later
                // (a second without room is an error).
                if e.raw_os_error() == Some(libc::ENOBUFS) && full < 20_000 {
                    full += 1;
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                result = Err(e);
                break;
            }
            full = 0;
            i += 1;
        }
        libc::close(fd);
        result
    }
}

fn raw_socket(kind: RawKind, v6: bool) {
    let pair = Pair::new().expect("namespaces and veth pair");
    let family = fam(v6);
    let ctx = format!("{kind:?} socket RSTs over {family}");
    let d = Daemon::start(BIN, &pair.b, &[&pair.b_if], LISTEN);
    let ifindex = pair.b.ifindex(&pair.b_if).expect("ifindex");
    // The neighbour first (a refused connect from b to a), so that no RST waits for
    // its resolution.
    let to: IpAddr = if v6 { pair.a6.into() } else { pair.a4.into() };
    connect_refused(&pair.b, SocketAddr::new(to, CLOSED_PORT), 1);
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| rst_frame(&pair, v6, 40_000 + i as u16))
        .collect();
    let before = d.scrape();
    pair.b
        .run(|| send_raw(kind, v6, ifindex, &frames))
        .expect("entering the namespace")
        .unwrap_or_else(|e| panic!("{ctx}: sending: {e}"));
    settle();
    let after = d.scrape();
    d.stop();

    let cf = |cause| [("cause", cause), ("family", family)];
    assert_delta(&after, &before, SENT, &cf("raw_socket"), N, &ctx);
    assert_delta(&after, &before, SENT, &cf("firewall_reject"), 0, &ctx);
    assert_delta(&after, &before, SENT, &cf("no_listener"), 0, &ctx);
    assert_delta(&after, &before, SENT, &cf("no_connection"), 0, &ctx);
    let wl = [
        ("interface", pair.b_if.as_str()),
        ("family", family),
        ("flags", "rst"),
        ("direction", "egress"),
    ];
    assert_delta(&after, &before, WIRE, &wl, N, &ctx);
    assert_origins(&after, &before, family, &[("raw_socket", N)], &ctx);
}

#[test]
fn raw_ip_socket_ipv4() {
    raw_socket(RawKind::Ip, false);
}

#[test]
fn raw_ip_socket_ipv6() {
    raw_socket(RawKind::Ip, true);
}

#[test]
fn packet_socket_ipv4() {
    raw_socket(RawKind::Packet, false);
}

#[test]
fn packet_socket_ipv6() {
    raw_socket(RawKind::Packet, true);
}

/// SYNs per sending CPU in [`same_connection_from_two_cpus_is_the_stack`].
const FLOOD_PER_CPU: usize = 100_000;

/// The stack's RSTs for one connection, sent on two CPUs at once (the same SYN sent to a
/// closed port from both CPUs, over a veth with a queue per CPU so that each CPU answers
/// its own): every one is announced and taken as the stack's, none as a raw socket's,
/// however the announcements and their takers of the two CPUs interleave on the one
/// entry they share.
#[test]
fn same_connection_from_two_cpus_is_the_stack() {
    let pair = Pair::new().expect("namespaces and veth pair");
    rst_testkit::net::make_multiqueue(&pair, 2).expect("a veth with a queue per CPU");
    let ctx = "one connection's RSTs sent on two CPUs at once";
    let d = Daemon::start(BIN, &pair.b, &[&pair.b_if], LISTEN);
    let a_idx = pair.a.ifindex(&pair.a_if).expect("ifindex");
    // b's neighbour entry for a first, so that no RST waits for its resolution.
    connect_refused(&pair.b, SocketAddr::new(pair.a4.into(), CLOSED_PORT), 1);
    let b_mac = mac_of(&pair.b, &pair.b_if).expect("MAC of b");
    let a_mac = mac_of(&pair.a, &pair.a_if).expect("MAC of a");
    let syn = rst_testkit::net::rst_to(&pair, b_mac, a_mac, 40_000, rst_common::TCP_SYN);
    let frames = vec![syn; FLOOD_PER_CPU];
    let mib = || {
        pair.b
            .run(rst_testkit::net::tcp_mib)
            .expect("namespace")
            .expect("snmp")
    };
    let before = d.scrape();
    let out0 = mib()["OutRsts"];
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (pair, frames) = (&pair, &frames);
            s.spawn(move || {
                pair.a
                    .run(|| {
                        rst_testkit::process::pin_thread(cpu);
                        send_raw(RawKind::PacketPerCpu, false, a_idx, frames)
                    })
                    .expect("entering the namespace")
                    .unwrap_or_else(|e| panic!("{ctx}: sending on CPU {cpu}: {e}"));
            });
        }
    });
    settle();
    let sent = (mib()["OutRsts"] - out0) as i64;
    let after = d.scrape();
    d.stop();
    assert!(
        sent > FLOOD_PER_CPU as i64 / 10,
        "{ctx}: b's stack answered only {sent} of {} SYNs",
        2 * FLOOD_PER_CPU
    );
    let wl = [
        ("interface", pair.b_if.as_str()),
        ("family", "ipv4"),
        ("flags", "rst_ack"),
        ("direction", "egress"),
    ];
    assert_delta(&after, &before, WIRE, &wl, sent, ctx);
    assert_origins(&after, &before, "ipv4", &[("stack", sent)], ctx);
    let cf = [("cause", "no_listener"), ("family", "ipv4")];
    assert_delta(&after, &before, SENT, &cf, sent, ctx);
}

/// client ⟷ router ⟷ server, the router forwarding IPv4 and IPv6.
struct Routed {
    client: Ns,
    router: Ns,
    server: Ns,
    /// The router's interfaces towards the client and towards the server.
    r_client: String,
    r_server: String,
    server4: Ipv4Addr,
    server6: std::net::Ipv6Addr,
}

impl Routed {
    fn new() -> Self {
        let ns = || Ns::new().expect("a namespace");
        let (client, router, server) = (ns(), ns(), ns());
        let n = (std::process::id() + SUBNET.fetch_add(1, Ordering::Relaxed)) % 250;
        let tag = format!("{}{}", std::process::id() % 10_000, n);
        let link = |a: &Ns, an: &str, b: &Ns, bn: &str| {
            let ok = std::process::Command::new("ip")
                .args([
                    "link", "add", an, "netns", &a.name, "type", "veth", "peer", "name", bn,
                    "netns", &b.name,
                ])
                .status()
                .expect("ip link add")
                .success();
            assert!(ok, "ip link add {an}");
        };
        let (c_if, r_client) = (format!("ec{tag}"), format!("erc{tag}"));
        let (r_server, s_if) = (format!("ers{tag}"), format!("es{tag}"));
        link(&client, &c_if, &router, &r_client);
        link(&router, &r_server, &server, &s_if);
        let addr = |ns: &Ns, ifn: &str, a4: String, a6: String| {
            ns.ip(&["addr", "add", &a4, "dev", ifn]).expect("address");
            ns.ip(&["-6", "addr", "add", &a6, "dev", ifn, "nodad"])
                .expect("address");
            ns.ip(&["link", "set", ifn, "up"]).expect("up");
        };
        addr(
            &client,
            &c_if,
            format!("10.217.{n}.1/24"),
            format!("fd00:5255:{n:x}::1/64"),
        );
        addr(
            &router,
            &r_client,
            format!("10.217.{n}.2/24"),
            format!("fd00:5255:{n:x}::2/64"),
        );
        addr(
            &router,
            &r_server,
            format!("10.218.{n}.1/24"),
            format!("fd00:5256:{n:x}::1/64"),
        );
        addr(
            &server,
            &s_if,
            format!("10.218.{n}.2/24"),
            format!("fd00:5256:{n:x}::2/64"),
        );
        for (ns, v4, v6) in [
            (
                &client,
                format!("10.217.{n}.2"),
                format!("fd00:5255:{n:x}::2"),
            ),
            (
                &server,
                format!("10.218.{n}.1"),
                format!("fd00:5256:{n:x}::1"),
            ),
        ] {
            ns.ip(&["route", "add", "default", "via", &v4])
                .expect("route");
            ns.ip(&["-6", "route", "add", "default", "via", &v6])
                .expect("route");
        }
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = router.output("sysctl", &["-qw", key]).expect("sysctl");
            assert!(out.status.success(), "sysctl {key} in the router");
        }
        Self {
            client,
            router,
            server,
            r_client,
            r_server,
            server4: format!("10.218.{n}.2").parse().expect("address"),
            server6: format!("fd00:5256:{n:x}::2").parse().expect("address"),
        }
    }
}

fn forwarded(v6: bool) {
    let net = Routed::new();
    let family = fam(v6);
    let ctx = format!("forwarded over {family}");
    let d = Daemon::start(BIN, &net.router, &[&net.r_client, &net.r_server], LISTEN);
    let to: IpAddr = if v6 {
        net.server6.into()
    } else {
        net.server4.into()
    };
    // Neighbours first: a SYN waiting for neighbour discovery longer than the client's
    // retransmission timeout is answered twice, and both answers are forwarded.
    connect_refused(&net.client, SocketAddr::new(to, CLOSED_PORT), 1);
    let before = d.scrape();
    connect_refused(&net.client, SocketAddr::new(to, CLOSED_PORT), N);
    settle();
    let after = d.scrape();
    d.stop();
    drop(net.server);

    for (iface, want) in [(&net.r_client, N), (&net.r_server, 0)] {
        let l = [("interface", iface.as_str()), ("family", family)];
        assert_delta(&after, &before, FORWARDED, &l, want, &ctx);
    }
    let wire = |iface: &str, dir: &str| {
        sum_delta(
            &after,
            &before,
            WIRE,
            &[("interface", iface), ("family", family), ("direction", dir)],
        )
    };
    assert_eq!(
        wire(&net.r_server, "ingress"),
        N,
        "{ctx}: in from the server"
    );
    assert_eq!(wire(&net.r_client, "egress"), N, "{ctx}: out to the client");
    assert_eq!(wire(&net.r_client, "ingress"), 0, "{ctx}");
    assert_eq!(wire(&net.r_server, "egress"), 0, "{ctx}");
    assert_origins(&after, &before, family, &[("forwarded", N)], &ctx);
    let cf = |cause| [("cause", cause), ("family", family)];
    assert_delta(&after, &before, SENT, &cf("firewall_reject"), 0, &ctx);
    assert_delta(&after, &before, SENT, &cf("raw_socket"), 0, &ctx);
    // The server's stack made them, in its own namespace: once each.
    assert_delta(&after, &before, SENT, &cf("no_listener"), N, &ctx);
    assert_delta(&after, &before, RECEIVED, &cf("refused"), N, &ctx);
    drop(net.client);
    drop(net.router);
}

#[test]
fn forwarded_ipv4() {
    forwarded(false);
}

#[test]
fn forwarded_ipv6() {
    forwarded(true);
}

/// Scenario `id` with the daemon on the sender's (the server's) interface: its one RST
/// leaves once and is counted as sent once, announced by the tracepoint.
fn scenario_egress(id: &str, v6: bool) {
    let sc = SCENARIOS
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no scenario {id}"));
    let family = if v6 { Family::Ipv6 } else { Family::Ipv4 };
    let fam = family.label();
    let pair = Pair::new().expect("namespaces and veth pair");
    let d = Daemon::start(BIN, &pair.b, &[&pair.b_if], LISTEN);
    let before = d.scrape();
    sc.run(&pair, v6)
        .unwrap_or_else(|e| panic!("{id} {fam}: running the situation: {e}"));
    settle();
    let after = d.scrape();
    d.stop();
    let ctx = format!("{id} ({}) over {fam}, sender side", sc.title);

    let missed = sum_delta(&after, &before, "rstmon_hook_missed_total", &[]);
    assert_eq!(missed, 0, "{ctx}: the kernel skipped rstmon's hooks");
    for cause in SendCause::ALL {
        let want = i64::from(*cause == sc.sent);
        let got = after.delta(&before, SENT, &[("cause", cause.label()), ("family", fam)]);
        assert_eq!(got, want, "{ctx}: {SENT}{{cause={cause}}} delta");
    }
    let bare = matches!(sc.sent, SendCause::NoConnection | SendCause::DataAfterClose);
    let flags = if bare { "rst" } else { "rst_ack" };
    let egress = sum_delta(
        &after,
        &before,
        WIRE,
        &[("interface", pair.b_if.as_str()), ("direction", "egress")],
    );
    assert_eq!(egress, 1, "{ctx}: RSTs leaving {}", pair.b_if);
    let wl = [
        ("interface", pair.b_if.as_str()),
        ("family", fam),
        ("flags", flags),
        ("direction", "egress"),
    ];
    assert_delta(&after, &before, WIRE, &wl, 1, &ctx);
    // Announced by the tracepoint, so counted by it alone: the wire fallback and the
    // unmatched path stay at 0.
    assert_origins(&after, &before, fam, &[("stack", 1)], &ctx);
    assert_origins(&after, &before, self::fam(!v6), &[], &ctx);
}

macro_rules! scenario_egress_tests {
    ($($name:ident => ($id:literal, $v6:literal)),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                scenario_egress($id, $v6);
            }
        )+
    };
}

scenario_egress_tests! {
    s1_egress_ipv4 => ("S1", false),
    s1_egress_ipv6 => ("S1", true),
    s2_egress_ipv4 => ("S2", false),
    s2_egress_ipv6 => ("S2", true),
    s3_egress_ipv4 => ("S3", false),
    s3_egress_ipv6 => ("S3", true),
    s4_egress_ipv4 => ("S4", false),
    s4_egress_ipv6 => ("S4", true),
    s5_egress_ipv4 => ("S5", false),
    s5_egress_ipv6 => ("S5", true),
    s6_egress_ipv4 => ("S6", false),
    s6_egress_ipv6 => ("S6", true),
    s7_egress_ipv4 => ("S7", false),
    s7_egress_ipv6 => ("S7", true),
}
