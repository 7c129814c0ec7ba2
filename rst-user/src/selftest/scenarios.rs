//! The situations S1–S7 (docs/classification.md), each reproduced with real sockets.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use super::sockets::*;
use crate::{
    classify::{RecvCause, SendCause},
    netns::Pair,
};

/// A situation of docs/classification.md (S1–S7).
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
