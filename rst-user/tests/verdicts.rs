//! The verdict of every ingress RST and the forged-reset signals, against the real
//! daemon, IPv4 and IPv6. An established connection runs between the client (namespace
//! a, rstmon's XDP on its veth) and the server (namespace b); the injector is a packet
//! socket on the server's end of the link, which puts hand-built frames on the client's
//! link as if they came from the peer or from anything in its path. A `watch --json`
//! reads the daemon's stream meanwhile: the samples carry the same verdicts. Needs root;
//! run with --test-threads=1.

mod common;

use std::{
    fs,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{BIN, Daemon, Metrics, rstmon};
use rst_common::TCP_RST;
use rst_testkit::{
    Watcher,
    frames::{Frame, Ip},
};
use rst_user::netns::{Ns, Pair};
use serde_json::Value;

const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9745);
const VERDICTS: &str = "rstmon_wire_reset_verdicts_total";
const SUSPECTS: &str = "rstmon_suspect_resets_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const SERVER_PORT: u16 = 8080;
/// A TTL/hop limit no Linux peer here uses (theirs is 64).
const FORGED_TTL: u8 = 37;

/// The MAC address of `iface` inside `ns`.
fn mac(ns: &Ns, iface: &str) -> [u8; 6] {
    let out = ns
        .output("ip", &["-br", "link", "show", "dev", iface])
        .unwrap_or_else(|e| panic!("ip link in {}: {e}", ns.name));
    let text = String::from_utf8_lossy(&out.stdout);
    let field = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"));
    let mut m = [0u8; 6];
    for (i, b) in field.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("MAC {field}: {e}"));
    }
    m
}

/// An established connection and what an injector needs to forge its peer's segments.
struct Conn<'a> {
    pair: &'a Pair,
    v6: bool,
    client: TcpStream,
    server: TcpStream,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    server_mac: [u8; 6],
    client_mac: [u8; 6],
    server_ifindex: u32,
}

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_SEND_QUEUE: i32 = 2;
/// Leave repair mode without sending a window probe.
const TCP_REPAIR_OFF_NO_WP: i32 = -1;

fn setsockopt_i32(fd: i32, opt: i32, v: i32) {
    // SAFETY: a valid fd and a 4-byte option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            opt,
            (&v as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    assert_eq!(r, 0, "setsockopt {opt}: {}", io::Error::last_os_error());
}

impl<'a> Conn<'a> {
    fn new(pair: &'a Pair, v6: bool) -> Self {
        let (cip, sip): (IpAddr, IpAddr) = if v6 {
            (pair.a6.into(), pair.b6.into())
        } else {
            (pair.a4.into(), pair.b4.into())
        };
        let server_addr = SocketAddr::new(sip, SERVER_PORT);
        let listener = pair
            .b
            .run(|| TcpListener::bind(server_addr))
            .expect("enter b")
            .expect("listen in b");
        let client = pair
            .a
            .run(|| TcpStream::connect_timeout(&server_addr, Duration::from_secs(5)))
            .expect("enter a")
            .expect("connect from a");
        let (server, client_addr) = listener.accept().expect("accept");
        assert_eq!(client_addr.ip(), cip);
        for s in [&client, &server] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.set_nodelay(true).expect("nodelay");
        }
        let server_ifindex = pair.b.ifindex(&pair.b_if).expect("ifindex");
        Self {
            pair,
            v6,
            client,
            server,
            client_addr,
            server_addr,
            server_mac: mac(&pair.b, &pair.b_if),
            client_mac: mac(&pair.a, &pair.a_if),
            server_ifindex,
        }
    }

    /// The server's next sequence number, which the client expects next (nothing is in
    /// flight): read in TCP_REPAIR mode, left without a window probe.
    fn next_seq(&self) -> u32 {
        let fd = self.server.as_raw_fd();
        setsockopt_i32(fd, TCP_REPAIR, 1);
        setsockopt_i32(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
        let mut seq: u32 = 0;
        let mut len = size_of::<u32>() as u32;
        // SAFETY: a valid fd and a 4-byte buffer.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                TCP_QUEUE_SEQ,
                (&mut seq as *mut u32).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "TCP_QUEUE_SEQ: {}", io::Error::last_os_error());
        setsockopt_i32(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
        seq
    }

    /// An RST from the server's address and port to the client, with `seq` and `ttl`.
    fn rst(&self, seq: u32, ttl: u8) -> Vec<u8> {
        self.rst_to(self.client_addr.port(), seq, ttl)
    }

    /// [`Conn::rst`] to another port of the client's address.
    fn rst_to(&self, dport: u16, seq: u32, ttl: u8) -> Vec<u8> {
        let mut f = if self.v6 {
            Frame::tcp6(TCP_RST)
        } else {
            Frame::tcp4(TCP_RST)
        };
        f.src_mac = self.server_mac;
        f.dst_mac = self.client_mac;
        match (&mut f.ip, self.server_addr.ip(), self.client_addr.ip()) {
            (Ip::V4(h), IpAddr::V4(s), IpAddr::V4(d)) => {
                h.src = s.octets();
                h.dst = d.octets();
                h.ttl = ttl;
                h.id = 0;
            }
            (Ip::V6(h), IpAddr::V6(s), IpAddr::V6(d)) => {
                h.src = s.octets();
                h.dst = d.octets();
                h.hop_limit = ttl;
            }
            _ => panic!("family mismatch"),
        }
        let sport = self.server_addr.port();
        f.with_tcp(|t| {
            t.sport = sport;
            t.dport = dport;
            t.seq = seq;
            t.ack = 0;
            t.flags = TCP_RST;
            t.window = 0;
        })
        .build()
        .bytes
    }

    /// Puts `frames` on the client's link from the server's end (a packet socket in b).
    fn inject(&self, frames: &[Vec<u8>]) {
        let ifindex = self.server_ifindex;
        self.pair
            .b
            .run(|| -> io::Result<()> {
                // SAFETY: plain socket call.
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = ifindex as i32;
                sll.sll_halen = 6;
                let mut res = Ok(());
                for f in frames {
                    // SAFETY: fd is ours, the frame and the address outlive the call.
                    let n = unsafe {
                        libc::sendto(
                            fd,
                            f.as_ptr().cast(),
                            f.len(),
                            0,
                            (&sll as *const libc::sockaddr_ll).cast(),
                            size_of::<libc::sockaddr_ll>() as u32,
                        )
                    };
                    if n < 0 {
                        res = Err(io::Error::last_os_error());
                        break;
                    }
                }
                // SAFETY: closing our own fd.
                unsafe { libc::close(fd) };
                res
            })
            .expect("enter b")
            .expect("inject frames");
        // Let the frames cross the veth and the stack.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Whether the client's socket is still open: a byte from the server arrives.
    fn alive(&mut self) -> bool {
        if self.server.write_all(b"x").is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        matches!(self.client.read(&mut b), Ok(1))
    }

    fn fam(&self) -> &'static str {
        if self.v6 { "ipv6" } else { "ipv4" }
    }
}

/// Deltas of every verdict and signal of the client's interface and this family.
struct Deltas {
    verdicts: [i64; 3],
    suspects: [i64; 3],
}

const VERDICT_NAMES: [&str; 3] = ["accepted", "challenged", "ignored"];
const SIGNAL_NAMES: [&str; 3] = ["ttl", "alive_after_reset", "seq_spray"];

fn deltas(after: &Metrics, before: &Metrics, iface: &str, fam: &str) -> Deltas {
    let d = |name: &str, label: &str, v: &str| {
        after.delta(
            before,
            name,
            &[("interface", iface), ("family", fam), (label, v)],
        )
    };
    Deltas {
        verdicts: VERDICT_NAMES.map(|v| d(VERDICTS, "verdict", v)),
        suspects: SIGNAL_NAMES.map(|s| d(SUSPECTS, "signal", s)),
    }
}

fn assert_deltas(got: &Deltas, verdicts: [i64; 3], suspects: [i64; 3], ctx: &str) {
    assert_eq!(
        got.verdicts, verdicts,
        "{ctx}: verdict deltas {VERDICT_NAMES:?}"
    );
    assert_eq!(
        got.suspects, suspects,
        "{ctx}: suspect deltas {SIGNAL_NAMES:?}"
    );
}

fn nstat_delta(ns: &Ns, f: impl FnOnce(), key: &str) -> i64 {
    let get = |m: &std::collections::BTreeMap<String, u64>| m.get(key).copied().unwrap_or(0);
    let before = ns.nstat().expect("nstat");
    f();
    let after = ns.nstat().expect("nstat");
    get(&after) as i64 - get(&before) as i64
}

/// The daemon on the client's veth, serving its stream, and a `watch --json` of it.
struct Watched<'a> {
    daemon: Daemon<'a>,
    watcher: Watcher,
    dir: PathBuf,
}

impl Watched<'_> {
    fn scrape(&self) -> Metrics {
        self.daemon.scrape()
    }

    /// The watcher's samples of the connection's client port, waiting up to 5 s for
    /// `want` of them (the ignored ones are shown once the join knows).
    fn samples(&self, port: u16, want: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got: Vec<Value> = self
                .watcher
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["sport"] == port || v["dport"] == port)
                .collect();
            if got.len() >= want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn with_daemon(v6: bool, f: impl FnOnce(&Watched, &mut Conn)) {
    let pair = Pair::new().expect("namespaces and veth pair");
    let dir = std::env::temp_dir().join(format!("rstmon-verdicts-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let sock = dir.join("watch.sock");
    let daemon = rstmon()
        .iface(&pair.a_if)
        .watch_socket(&sock)
        .start(&pair.a);
    let mut cmd = Command::new(BIN);
    cmd.arg("watch")
        .arg("--daemon-socket")
        .arg(&sock)
        .arg("--json")
        .env("RSTMON_LOG", "info");
    let watcher = Watcher::start(cmd, Duration::from_secs(20));
    let w = Watched {
        daemon,
        watcher,
        dir,
    };
    let mut conn = Conn::new(&pair, v6);
    f(&w, &mut conn);
    let _ = w.watcher.stop();
    w.daemon.stop();
    let _ = fs::remove_dir_all(&w.dir);
}

/// The one sample of `direction` among `samples`.
fn one<'a>(samples: &'a [Value], direction: &str) -> &'a Value {
    let of: Vec<&Value> = samples
        .iter()
        .filter(|v| v["direction"] == direction)
        .collect();
    assert_eq!(of.len(), 1, "one {direction} sample in {samples:?}");
    of[0]
}

fn exact_forged_ttl(v6: bool) {
    with_daemon(v6, |d, c| {
        let ctx = format!("exact RST, TTL {FORGED_TTL}, {}", c.fam());
        let before = d.scrape();
        let seq = c.next_seq();
        let frame = c.rst(seq, FORGED_TTL);
        c.inject(&[frame]);
        let after = d.scrape();
        assert_deltas(
            &deltas(&after, &before, &c.pair.a_if, c.fam()),
            [1, 0, 0],
            [1, 0, 0],
            &ctx,
        );
        assert_eq!(
            after.delta(
                &before,
                RECEIVED,
                &[("cause", "peer_lost_state"), ("family", c.fam())]
            ),
            1,
            "{ctx}: the socket took it (no timestamp: stateless)"
        );
        let mut b = [0u8; 1];
        let err = c
            .client
            .read(&mut b)
            .expect_err("the client's socket was reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{ctx}");
        // The daemon's stream: the wire sample says accepted + ttl, and the received
        // reset carries the wire fields of that very RST.
        let samples = d.samples(c.client_addr.port(), 2);
        let (wire, received) = (one(&samples, "wire"), one(&samples, "received"));
        println!("{wire}\n{received}");
        assert_eq!(wire["verdict"], "accepted", "{ctx}: {wire}");
        assert_eq!(wire["suspect"], serde_json::json!(["ttl"]), "{ctx}: {wire}");
        assert_eq!(wire["ttl"], FORGED_TTL, "{ctx}: {wire}");
        assert_eq!(wire["peer_ttl"], 64, "{ctx}: {wire}");
        assert_eq!(wire["seq"], seq, "{ctx}: {wire}");
        assert_eq!(received["verdict"], "accepted", "{ctx}: {received}");
        assert_eq!(received["suspect"], serde_json::json!(["ttl"]), "{ctx}");
        assert_eq!(received["wire"]["ttl"], FORGED_TTL, "{ctx}: {received}");
        assert_eq!(received["wire"]["seq"], seq, "{ctx}: {received}");
        assert_eq!(
            received["wire"]["interface"],
            c.pair.a_if.as_str(),
            "{ctx}: {received}"
        );
        if !c.v6 {
            assert_eq!(received["wire"]["ip_id"], 0, "{ctx}: {received}");
        }
    });
}

fn in_window_challenged(v6: bool) {
    with_daemon(v6, |d, c| {
        let ctx = format!("in-window inexact RST, {}", c.fam());
        let before = d.scrape();
        let frame = c.rst(c.next_seq().wrapping_add(1000), 64);
        let challenge = nstat_delta(&c.pair.a, || c.inject(&[frame]), "TcpExtTCPChallengeACK");
        let after = d.scrape();
        assert_deltas(
            &deltas(&after, &before, &c.pair.a_if, c.fam()),
            [0, 1, 0],
            [0, 0, 0],
            &ctx,
        );
        assert_eq!(challenge, 1, "{ctx}: the client's TcpExtTCPChallengeACK");
        let samples = d.samples(c.client_addr.port(), 1);
        assert_eq!(one(&samples, "wire")["verdict"], "challenged", "{ctx}");
        assert!(c.alive(), "{ctx}: the connection survives");
    });
}

fn out_of_window_and_no_connection_ignored(v6: bool) {
    with_daemon(v6, |d, c| {
        let ctx = format!("out-of-window RST and RST for no connection, {}", c.fam());
        let before = d.scrape();
        let oow = c.rst(c.next_seq().wrapping_add(0x4000_0000), 64);
        // The same addresses and server port, another client port: no socket has it.
        let none = c.rst_to(c.client_addr.port() ^ 0x4000, c.next_seq(), 64);
        c.inject(&[oow, none]);
        let after = d.scrape();
        assert_deltas(
            &deltas(&after, &before, &c.pair.a_if, c.fam()),
            [0, 0, 2],
            [0, 0, 0],
            &ctx,
        );
        // Shown once the join knows no verdict can come.
        let oow = d.samples(c.client_addr.port(), 1);
        assert_eq!(one(&oow, "wire")["verdict"], "ignored", "{ctx}: {oow:?}");
        assert_eq!(one(&oow, "wire")["suspect"], serde_json::json!([]), "{ctx}");
        assert!(c.alive(), "{ctx}: the connection survives");
    });
}

fn alive_after_reset(v6: bool) {
    with_daemon(v6, |d, c| {
        let ctx = format!("RST then the real peer's data, {}", c.fam());
        let before = d.scrape();
        // The peer's own TTL: only the peer's next segment gives this one away.
        let frame = c.rst(c.next_seq(), 64);
        c.inject(&[frame]);
        // The real server never reset: it keeps sending; the client host, without the
        // connection now, answers with a no_connection reset.
        c.server.write_all(b"still here").expect("server writes");
        std::thread::sleep(Duration::from_millis(300));
        let after = d.scrape();
        assert_deltas(
            &deltas(&after, &before, &c.pair.a_if, c.fam()),
            [1, 0, 0],
            [0, 1, 0],
            &ctx,
        );
        // The received reset's sample again, now with the signal.
        let samples = d.samples(c.client_addr.port(), 5);
        let late: Vec<&Value> = samples
            .iter()
            .filter(|v| v["direction"] == "received" && v["sport"] == c.client_addr.port())
            .collect();
        assert_eq!(late.len(), 2, "{ctx}: {samples:?}");
        assert_eq!(late[0]["suspect"], serde_json::json!([]), "{ctx}");
        assert_eq!(
            late[1]["suspect"],
            serde_json::json!(["alive_after_reset"]),
            "{ctx}"
        );
    });
}

fn seq_spray(v6: bool) {
    with_daemon(v6, |d, c| {
        let ctx = format!("eight RSTs with different seqs, {}", c.fam());
        let before = d.scrape();
        let base = c.next_seq();
        let frames: Vec<Vec<u8>> = (1..=8u32)
            .map(|i| c.rst(base.wrapping_add(i * 1500), 64))
            .collect();
        c.inject(&frames);
        let after = d.scrape();
        // All in window and inexact: challenged. The fourth distinct sequence number
        // and every later one within the window are flagged.
        assert_deltas(
            &deltas(&after, &before, &c.pair.a_if, c.fam()),
            [0, 8, 0],
            [0, 0, 5],
            &ctx,
        );
        assert!(c.alive(), "{ctx}: the connection survives");
    });
}

macro_rules! both_families {
    ($($name:ident => $f:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn ipv4() {
                    super::$f(false);
                }
                #[test]
                fn ipv6() {
                    super::$f(true);
                }
            }
        )+
    };
}

both_families! {
    exact_rst_with_foreign_ttl_is_accepted_and_ttl => exact_forged_ttl,
    in_window_inexact_rst_is_challenged => in_window_challenged,
    out_of_window_and_no_connection_rsts_are_ignored => out_of_window_and_no_connection_ignored,
    rst_followed_by_peer_data_is_alive_after_reset => alive_after_reset,
    eight_rsts_with_different_seqs_are_seq_spray => seq_spray,
}

/// Kills the child on drop (also on panic), by its PID.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `watch --standalone --json` on a forged exact RST: the wire sample says accepted +
/// ttl, and the received reset carries the wire fields of that very RST (the join of
/// the standalone printer, as the daemon's stream has it above).
#[test]
fn watch_json_joins_the_forged_rst_with_the_socket_that_took_it() {
    let pair = Pair::new().expect("namespaces");
    let mut child = pair
        .a
        .command(BIN)
        .args(["watch", "--standalone", "--json", "-i", &pair.a_if])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rstmon watch");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let _guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match err.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("watching resets") => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("rstmon watch ended before it was ready: {e}"),
        }
        assert!(Instant::now() < deadline, "watch not ready within 60 s");
    }
    let c = Conn::new(&pair, false);
    let seq = c.next_seq();
    c.inject(&[c.rst(seq, FORGED_TTL)]);
    let port = c.client_addr.port();
    let mut wire = None;
    let mut received = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (wire.is_none() || received.is_none()) && Instant::now() < deadline {
        let Ok(line) = out.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        println!("{line}");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        match v["direction"].as_str() {
            Some("wire") if v["dport"] == port => wire = Some(v),
            Some("received") if v["sport"] == port => received = Some(v),
            _ => {}
        }
    }
    let wire = wire.expect("a wire sample of the forged RST");
    let received = received.expect("a received-reset sample");
    assert_eq!(wire["verdict"], "accepted", "{wire}");
    assert_eq!(wire["suspect"], serde_json::json!(["ttl"]), "{wire}");
    assert_eq!(wire["ttl"], FORGED_TTL, "{wire}");
    assert_eq!(wire["peer_ttl"], 64, "{wire}");
    assert_eq!(wire["seq"], seq, "{wire}");
    assert_eq!(received["verdict"], "accepted", "{received}");
    assert_eq!(
        received["suspect"],
        serde_json::json!(["ttl"]),
        "{received}"
    );
    assert_eq!(received["wire"]["ttl"], FORGED_TTL, "{received}");
    assert_eq!(received["wire"]["seq"], seq, "{received}");
    assert_eq!(received["wire"]["ip_id"], 0, "{received}");
    assert_eq!(
        received["wire"]["interface"],
        pair.a_if.as_str(),
        "{received}"
    );
}

/// 300 connects to a closed port per family: every RST|ACK accepted by its connecting
/// socket, none suspect.
#[test]
fn burst_of_300_refused_connects_is_accepted_and_never_suspect() {
    const BURST: i64 = 300;
    let pair = Pair::new().expect("namespaces and veth pair");
    let d = Daemon::start(BIN, &pair.a, &[&pair.a_if], LISTEN);
    for (fam, to) in [("ipv4", IpAddr::from(pair.b4)), ("ipv6", pair.b6.into())] {
        let before = d.scrape();
        common::connect_refused(&pair.a, SocketAddr::new(to, 9), BURST);
        std::thread::sleep(Duration::from_millis(200));
        let after = d.scrape();
        assert_deltas(
            &deltas(&after, &before, &pair.a_if, fam),
            [BURST, 0, 0],
            [0, 0, 0],
            &format!("{BURST} refused connects over {fam}"),
        );
    }
    d.stop();
}
