//! A reset sent by a listening socket carries the connection's addresses and ports,
//! not the listener's zero peer (`0.0.0.0:0`): `rstmon watch --json` on an ACK that
//! reaches a listener with no connection or request for it (the kernel answers
//! `TCP_FLAGS`, cause `invalid_segment`), over IPv4 and IPv6. Needs root.

use std::{
    io::{self, BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, TcpListener},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use rst_user::netns::Pair;
use serde_json::Value;

const RSTMON: &str = env!("CARGO_BIN_EXE_rstmon");
const TCP_REPAIR: libc::c_int = 19;

/// Kills the child on drop (also on panic), by its PID.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A socket "connected" to `to` in TCP_REPAIR mode (no handshake: the listener knows
/// nothing of it), then taken out of repair mode, which sends a window probe (an ACK),
/// and written to: segments with ACK that reach a listener. The local address.
fn ack_to_listener(from: IpAddr, to: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let af = if to.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2).
    let raw = unsafe { libc::socket(af, libc::SOCK_STREAM, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let on: libc::c_int = 1;
    let off: libc::c_int = 0;
    let opt = |v: &libc::c_int| {
        // SAFETY: setsockopt with a c_int option value of its size, on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                TCP_REPAIR,
                (v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    check(opt(&on), "TCP_REPAIR on (needs CAP_NET_ADMIN)")?;
    let (local, llen) = sockaddr(SocketAddr::new(from, 0));
    let sa = (&local as *const libc::sockaddr_storage).cast();
    // SAFETY: a sockaddr of the length given.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), sa, llen) };
    check(rc, "bind")?;
    let (remote, rlen) = sockaddr(to);
    let sa = (&remote as *const libc::sockaddr_storage).cast();
    // SAFETY: a sockaddr of the length given.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), sa, rlen) };
    check(rc, "connect in repair mode")?;
    check(opt(&off), "TCP_REPAIR off")?;
    // SAFETY: writes from a buffer we own.
    unsafe { libc::write(fd.as_raw_fd(), b"hello?".as_ptr().cast(), 6) };
    // SAFETY: all-zero is a valid sockaddr_storage; getsockname fills it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let sa = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: getsockname writes at most `len` bytes into `ss`.
    let rc = unsafe { libc::getsockname(fd.as_raw_fd(), sa, &mut len) };
    check(rc, "getsockname")?;
    // SAFETY: the kernel filled a sockaddr_in or sockaddr_in6 (by its family).
    let port = unsafe {
        if af == libc::AF_INET6 {
            u16::from_be(
                (*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()).sin6_port,
            )
        } else {
            u16::from_be(
                (*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port,
            )
        }
    };
    Ok((fd, SocketAddr::new(from, port)))
}

#[test]
fn listener_resets_show_the_connection_addresses() {
    let pair = Pair::new().expect("namespaces");
    let mut child = pair
        .b
        .command(RSTMON)
        .args(["watch", "--json", "-i", &pair.b_if])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rstmon watch");
    let (tx, out) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let mut guard = Guard(child);
    let mut err = BufReader::new(stderr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while !line.contains("watching resets") {
        line.clear();
        assert!(
            err.read_line(&mut line).expect("watch stderr") > 0,
            "rstmon watch ended before it was ready"
        );
        assert!(
            Instant::now() < deadline,
            "rstmon watch not ready within 60 s"
        );
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));

    for (family, a, b) in [
        ("ipv4", IpAddr::V4(pair.a4), IpAddr::V4(pair.b4)),
        ("ipv6", IpAddr::V6(pair.a6), IpAddr::V6(pair.b6)),
    ] {
        let listener = pair
            .b
            .run(|| TcpListener::bind(SocketAddr::new(b, 0)))
            .expect("enter b")
            .expect("listen in b");
        let server = listener.local_addr().unwrap();
        let (_client, client) = pair
            .a
            .run(|| ack_to_listener(a, server))
            .expect("enter a")
            .expect("an ACK to the listener");
        let until = Instant::now() + Duration::from_secs(10);
        let sample = loop {
            let l = out
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!("{family}: no sample of the listener's reset within 10 s")
                });
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            let port = server.port();
            if v["direction"] == "sent" && v["state"] == "LISTEN" && v["sport"] == port {
                break v;
            }
        };
        println!("{family}: {sample}");
        assert_eq!(sample["src"], server.ip().to_string(), "{sample}");
        assert_eq!(sample["dst"], client.ip().to_string(), "{sample}");
        assert_eq!(sample["dport"], client.port(), "{sample}");
        assert_eq!(sample["family"], family, "{sample}");
        assert_eq!(sample["cause"], "invalid_segment", "{sample}");
        drop(listener);
    }

    // SAFETY: signalling our own child by its PID.
    assert_eq!(unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) }, 0);
    let status = guard.0.wait().expect("wait");
    assert!(status.success(), "watch exited with {status}");
}
