//! `rstmon selftest` and the scenario tests: reproduce S1–S7 of docs/classification.md
//! with real sockets in throwaway network namespaces, over IPv4 and IPv6, and compare
//! the cause rstmon names on each side with the expected one.

use std::{
    io::{self, Read as _, Write as _},
    mem::size_of,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    classify::{self, RecvCause, SendCause},
    events::{self, Event},
    kernel::KernelLayout,
    netns::{Ns, Pair},
};

/// A situation from SCENARIOS.md.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub title: &'static str,
    /// Cause on the host that sends the RST.
    pub sent: SendCause,
    /// Cause on the host whose socket accepts it.
    pub received: RecvCause,
    run: fn(&Pair, bool) -> io::Result<Flow>,
}

/// Who sent the RST to whom: the sender's and the receiver's local endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub sender: SocketAddr,
    pub receiver: SocketAddr,
}

pub const SCENARIOS: [Scenario; 7] = [
    Scenario {
        id: "S1",
        title: "SYN to a port where nothing listens",
        sent: SendCause::NoListener,
        received: RecvCause::Refused,
        run: s1_no_listener,
    },
    Scenario {
        id: "S2",
        title: "request timeout: SO_RCVTIMEO expires, zero-linger close",
        sent: SendCause::LingerAbort,
        received: RecvCause::PeerAbort,
        run: s2_request_timeout,
    },
    Scenario {
        id: "S3",
        title: "close() with unread data in the receive buffer",
        sent: SendCause::UnreadDataClose,
        received: RecvCause::PeerAbort,
        run: s3_unread_data,
    },
    Scenario {
        id: "S4",
        title: "peer keeps writing after the other side closed",
        sent: SendCause::DataAfterClose,
        received: RecvCause::PeerClosed,
        run: s4_data_after_close,
    },
    Scenario {
        id: "S5",
        title: "segment for a connection the host lost (crash/reboot)",
        sent: SendCause::NoConnection,
        received: RecvCause::PeerLostState,
        run: s5_lost_state,
    },
    Scenario {
        id: "S6",
        title: "keepalive probe reaches a host that rebooted",
        sent: SendCause::NoConnection,
        received: RecvCause::PeerLostState,
        run: s6_keepalive,
    },
    Scenario {
        id: "S7",
        title: "abortive close, SO_LINGER {on, 0}, queued data discarded",
        sent: SendCause::LingerAbort,
        received: RecvCause::PeerAbort,
        run: s7_linger_abort,
    },
];

impl Scenario {
    /// Runs the scenario between `pair.a` (client) and `pair.b` (server).
    pub fn run(&self, pair: &Pair, v6: bool) -> io::Result<Flow> {
        (self.run)(pair, v6)
    }
}

// --- socket helpers ------------------------------------------------------------------------

fn addrs(pair: &Pair, v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (pair.a6.into(), pair.b6.into())
    } else {
        (pair.a4.into(), pair.b4.into())
    }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SO_LINGER {on, 0}: close() aborts with an RST.
pub fn set_linger0(fd: &impl AsRawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &l)
}

/// Makes the socket vanish without a FIN or RST, as if the host had crashed: TCP_REPAIR
/// mode, then close (needs CAP_NET_ADMIN).
pub fn vanish(stream: TcpStream) -> io::Result<()> {
    const TCP_REPAIR: i32 = 19;
    setsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, TCP_REPAIR, &1i32)?;
    drop(stream);
    Ok(())
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as u32)
}

/// A TCP socket bound to `local` (port chosen by the kernel), before connect.
pub struct ClientSocket {
    fd: std::os::fd::OwnedFd,
    pub local: SocketAddr,
}

impl ClientSocket {
    /// Creates and binds a socket; call from inside the client's namespace.
    pub fn bind(local_ip: IpAddr) -> io::Result<Self> {
        let fam = if local_ip.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, owned fd.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let (ss, len) = sockaddr(SocketAddr::new(local_ip, 0));
        // SAFETY: ss holds a valid sockaddr of length len.
        if unsafe { libc::bind(raw, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut out: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut olen = size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: out is large enough; olen is its size.
        if unsafe {
            libc::getsockname(
                raw,
                (&mut out as *mut libc::sockaddr_storage).cast(),
                &mut olen,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let port = if fam == libc::AF_INET {
            // SAFETY: the kernel wrote a sockaddr_in.
            u16::from_be(unsafe {
                (*(&out as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port
            })
        } else {
            // SAFETY: the kernel wrote a sockaddr_in6.
            u16::from_be(unsafe {
                (*(&out as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()).sin6_port
            })
        };
        Ok(Self {
            fd,
            local: SocketAddr::new(local_ip, port),
        })
    }

    /// Enables keepalive probes after `idle_s` seconds of silence, every second.
    pub fn keepalive(&self, idle_s: i32) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, &1i32)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, &idle_s)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, &1i32)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, &3i32)
    }

    /// Blocking connect.
    pub fn connect(self, dst: SocketAddr) -> io::Result<TcpStream> {
        let (ss, len) = sockaddr(dst);
        let raw = self.fd.as_raw_fd();
        // SAFETY: ss holds a valid sockaddr of length len.
        if unsafe { libc::connect(raw, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TcpStream::from(self.fd))
    }
}

/// A listener in `ns` and a connected client in `client_ns`; returns
/// (client stream, server stream, client addr, server addr).
fn connected(
    client_ns: &Ns,
    server_ns: &Ns,
    client_ip: IpAddr,
    server_ip: IpAddr,
    keepalive: Option<i32>,
) -> io::Result<(TcpStream, TcpStream, SocketAddr, SocketAddr)> {
    let listener = server_ns.run(|| TcpListener::bind(SocketAddr::new(server_ip, 0)))??;
    let server = listener.local_addr()?;
    let client_sock = client_ns.run(|| ClientSocket::bind(client_ip))??;
    if let Some(idle) = keepalive {
        client_sock.keepalive(idle)?;
    }
    let client_addr = client_sock.local;
    let client = client_sock.connect(server)?;
    let (accepted, _) = listener.accept()?;
    Ok((client, accepted, client_addr, server))
}

fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// Lets the RST arrive, closes the client, and names the flow (server → client).
fn finish(client: TcpStream, server: SocketAddr, client_addr: SocketAddr) -> io::Result<Flow> {
    settle();
    drop(client);
    Ok(Flow {
        sender: server,
        receiver: client_addr,
    })
}

// --- the situations --------------------------------------------------------------------------

fn s1_no_listener(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    // A port that was just free: bind, note, close.
    let closed =
        p.b.run(|| TcpListener::bind(SocketAddr::new(b, 0)).and_then(|l| l.local_addr()))??;
    let sock = p.a.run(|| ClientSocket::bind(a))??;
    let client = sock.local;
    match sock.connect(closed) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(e) => {
            return Err(io::Error::other(format!(
                "S1: connect failed with {e}, expected ECONNREFUSED"
            )));
        }
        Ok(_) => return Err(io::Error::other("S1: connect to a closed port succeeded")),
    }
    Ok(Flow {
        sender: closed,
        receiver: client,
    })
}

fn s2_request_timeout(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (client, mut server, ca, sa) = connected(&p.a, &p.b, a, b, None)?;
    server.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 64];
    match server.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => {
            return Err(io::Error::other(format!(
                "S2: expected a receive timeout, got {other:?}"
            )));
        }
    }
    set_linger0(&server)?;
    drop(server);
    finish(client, sa, ca)
}

fn s3_unread_data(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (mut client, mut server, ca, sa) = connected(&p.a, &p.b, a, b, None)?;
    client.write_all(&[0x5a; 5000])?;
    let mut buf = vec![0u8; 4096];
    server.read_exact(&mut buf)?;
    settle(); // the remaining 904 bytes arrive and stay unread
    drop(server);
    finish(client, sa, ca)
}

fn s4_data_after_close(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (mut client, server, ca, sa) = connected(&p.a, &p.b, a, b, None)?;
    drop(server); // FIN
    settle(); // client in CLOSE_WAIT, server's orphan in FIN_WAIT2
    client.write_all(b"late request")?; // answered with an RST
    settle();
    match client.write_all(b"second write") {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => {
            return Err(io::Error::other(format!(
                "S4: second write should get EPIPE, got {other:?}"
            )));
        }
    }
    Ok(Flow {
        sender: sa,
        receiver: ca,
    })
}

fn s5_lost_state(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (mut client, server, ca, sa) = connected(&p.a, &p.b, a, b, None)?;
    vanish(server)?; // the server host "reboots": no FIN, no RST, no state
    client.write_all(b"anyone there?")?;
    finish(client, sa, ca)
}

fn s6_keepalive(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (client, server, ca, sa) = connected(&p.a, &p.b, a, b, Some(1))?;
    vanish(server)?;
    // The first probe goes out after 1 s of idle time and is answered with an RST.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1];
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut c = &client;
    loop {
        match c.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => {
                return Err(io::Error::other(format!(
                    "S6: expected a reset, got {other:?}"
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other("S6: no reset within 5 s of keepalive"));
        }
    }
    Ok(Flow {
        sender: sa,
        receiver: ca,
    })
}

fn s7_linger_abort(p: &Pair, v6: bool) -> io::Result<Flow> {
    let (a, b) = addrs(p, v6);
    let (client, mut server, ca, sa) = connected(&p.a, &p.b, a, b, None)?;
    server.write_all(&[0xa5; 64 * 1024])?; // queued data, discarded by the abort
    set_linger0(&server)?;
    drop(server);
    finish(client, sa, ca)
}

// --- observation -----------------------------------------------------------------------------

/// Samples collected from the ring buffer by a background thread.
#[derive(Clone, Default)]
pub struct Collected(pub Arc<Mutex<Vec<Event>>>);

/// What rstmon said about one flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub sent: Option<SendCause>,
    pub received: Option<RecvCause>,
}

impl Collected {
    /// Causes of the first sent and received samples of `flow`.
    pub fn observe(&self, flow: &Flow, layout: &KernelLayout) -> Observed {
        let evs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = Observed::default();
        for ev in evs.iter() {
            match ev {
                Event::Send(s) if o.sent.is_none() => {
                    let local = SocketAddr::new(events::addr(s.key.family, &s.saddr), s.sport);
                    let remote = SocketAddr::new(events::addr(s.key.family, &s.daddr), s.dport);
                    if local == flow.sender && remote == flow.receiver {
                        o.sent = Some(classify::classify_send_key(&layout.reasons, &s.key));
                    }
                }
                Event::Recv(r) if o.received.is_none() => {
                    let local = SocketAddr::new(events::addr(r.key.family, &r.saddr), r.sport);
                    let remote = SocketAddr::new(events::addr(r.key.family, &r.daddr), r.dport);
                    if local == flow.receiver && remote == flow.sender {
                        o.received = Some(classify::classify_recv(&r.key));
                    }
                }
                _ => {}
            }
        }
        o
    }

    /// Waits until both sides of `flow` were seen, or `timeout`.
    pub fn wait(&self, flow: &Flow, layout: &KernelLayout, timeout: Duration) -> Observed {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.observe(flow, layout);
            if (o.sent.is_some() && o.received.is_some()) || Instant::now() > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One printed row.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: &'static str,
    pub family: &'static str,
    pub side: &'static str,
    pub expected: &'static str,
    pub observed: String,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.expected == self.observed
    }
}

/// Runs every scenario over both families, observing through `collected`.
pub fn run_all(
    collected: &Collected,
    layout: &KernelLayout,
    mut progress: impl FnMut(&Row),
) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for v6 in [false, true] {
        let family = if v6 { "ipv6" } else { "ipv4" };
        for sc in SCENARIOS {
            let pair = Pair::new()?;
            let flow = sc
                .run(&pair, v6)
                .map_err(|e| io::Error::other(format!("{} {family}: {e}", sc.id)))?;
            let o = collected.wait(&flow, layout, Duration::from_secs(3));
            drop(pair);
            let name = |c: Option<&'static str>| c.unwrap_or("(none)").to_string();
            for row in [
                Row {
                    id: sc.id,
                    family,
                    side: "sender",
                    expected: sc.sent.label(),
                    observed: name(o.sent.map(SendCause::label)),
                },
                Row {
                    id: sc.id,
                    family,
                    side: "receiver",
                    expected: sc.received.label(),
                    observed: name(o.received.map(RecvCause::label)),
                },
            ] {
                progress(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
