//! Socket helpers of the scenarios: options the standard library does not set, a
//! client socket bound before connect, and waiting for the kernel to settle.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd},
    time::Duration,
};

use super::scenarios::Flow;
use crate::netns::{Ns, Pair};

pub(super) fn addrs(pair: &Pair, v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (pair.a6.into(), pair.b6.into())
    } else {
        (pair.a4.into(), pair.b4.into())
    }
}

pub(super) fn setsockopt<T>(fd: i32, level: i32, name: i32, val: &T) -> io::Result<()> {
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
pub(super) fn connected(
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

pub(super) fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// Lets the RST arrive, closes the client, and names the flow (server → client).
pub(super) fn finish(
    client: TcpStream,
    server: SocketAddr,
    client_addr: SocketAddr,
) -> io::Result<Flow> {
    settle();
    drop(client);
    Ok(Flow {
        sender: server,
        receiver: client_addr,
    })
}
