//! `--web.listen-address`: what it accepts and the sockets it makes.
//!
//! * `:PORT` — every address, IPv4 and IPv6: one IPv6 socket on `[::]` with
//!   `IPV6_V6ONLY` off (whatever `net.ipv6.bindv6only` says), which takes IPv4
//!   connections as v4-mapped addresses. One socket, as Go's `net.Listen(":PORT")` makes
//!   for node_exporter; on a host without IPv6 (no AF_INET6, or `[::]` not bindable) it
//!   falls back to `0.0.0.0:PORT` with a log line.
//! * `ADDR:PORT`, `[V6ADDR]:PORT` — that address only.
//! * `HOST:PORT` — the name resolved once, at start: every address it resolves to
//!   (`localhost:9745` → 127.0.0.1 and ::1), each its own socket.

use std::{
    fmt, io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _},
    os::fd::AsRawFd as _,
};

use tokio::net::{TcpListener, TcpSocket};
use tracing::info;

use super::http::LISTEN_BACKLOG;

/// One `--web.listen-address` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every IPv4 and IPv6 address.
    Any(u16),
    /// An address literal.
    Addr(SocketAddr),
    /// A host name, resolved at start.
    Host(String, u16),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Any(p) => write!(f, ":{p}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
            ListenAddr::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Parses `:PORT`, `ADDR:PORT`, `[V6]:PORT` or `HOST:PORT` (clap value parser).
pub fn parse(s: &str) -> Result<ListenAddr, String> {
    let bad = || {
        format!(
            "`{s}` is not ADDR:PORT, HOST:PORT or :PORT (e.g. :9745, 0.0.0.0:9745, [::1]:9745, localhost:9745)"
        )
    };
    if let Some(port) = s.strip_prefix(':') {
        return port.parse().map(ListenAddr::Any).map_err(|_| bad());
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr::Addr(a));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !name_ok {
        return Err(bad());
    }
    Ok(ListenAddr::Host(host.to_string(), port))
}

/// Why a listen address could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot resolve `{host}` (--web.listen-address {spec}): {err}")]
    Resolve {
        host: String,
        spec: String,
        err: io::Error,
    },
    #[error("cannot listen on {addr}: address already in use")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {err}")]
    Bind { addr: SocketAddr, err: io::Error },
}

/// A listening socket on `addr` (SO_REUSEADDR, backlog [`LISTEN_BACKLOG`]); with
/// `dual_stack`, an IPv6 socket that takes IPv4 too. Must be called inside the tokio
/// runtime.
pub fn bind(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        let v6only = libc::c_int::from(!dual_stack);
        // SAFETY: setsockopt on our own open socket with a c_int option of its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&v6only as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 && dual_stack {
            return Err(io::Error::last_os_error());
        }
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn bind_err(addr: SocketAddr, e: io::Error) -> ListenError {
    if e.kind() == io::ErrorKind::AddrInUse {
        ListenError::InUse { addr }
    } else {
        ListenError::Bind { addr, err: e }
    }
}

/// The host has no usable IPv6 (no AF_INET6 at all, or no IPv6 address to bind).
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Every socket the addresses ask for, in order; an address that several values (or a
/// name's resolution) give twice is bound once.
pub fn bind_all(addrs: &[ListenAddr]) -> Result<Vec<TcpListener>, ListenError> {
    let mut bound: Vec<SocketAddr> = Vec::new();
    let mut out = Vec::new();
    for spec in addrs {
        let targets: Vec<(SocketAddr, bool)> = match spec {
            ListenAddr::Any(port) => {
                let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, *port));
                match bind(v6, true) {
                    Ok(l) => {
                        out.push(l);
                        continue;
                    }
                    Err(e) if no_ipv6(&e) => {
                        info!("no IPv6 on this host ({e}): {spec} listens on IPv4 only");
                        vec![(SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port)), false)]
                    }
                    Err(e) => return Err(bind_err(v6, e)),
                }
            }
            ListenAddr::Addr(a) => vec![(*a, false)],
            ListenAddr::Host(host, port) => {
                let resolved: Vec<SocketAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|err| ListenError::Resolve {
                        host: host.clone(),
                        spec: spec.to_string(),
                        err,
                    })?
                    .collect();
                resolved.into_iter().map(|a| (a, false)).collect()
            }
        };
        for (addr, dual) in targets {
            if addr.port() != 0 && bound.contains(&addr) {
                continue;
            }
            out.push(bind(addr, dual).map_err(|e| bind_err(addr, e))?);
            bound.push(addr);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(parse(":9745"), Ok(ListenAddr::Any(9745)));
        assert_eq!(
            parse("127.0.0.1:1"),
            Ok(ListenAddr::Addr("127.0.0.1:1".parse().unwrap()))
        );
        assert_eq!(
            parse("[::1]:0"),
            Ok(ListenAddr::Addr("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            parse("localhost:9100"),
            Ok(ListenAddr::Host("localhost".into(), 9100))
        );
        for bad in [
            "", "9745", ":", ":x", ":70000", "::1:80", "host", "ho st:1", "a:b:1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[tokio::test]
    async fn any_port_takes_ipv4_and_ipv6() {
        let ls = bind_all(&[ListenAddr::Any(0)]).unwrap();
        assert_eq!(ls.len(), 1);
        let port = ls[0].local_addr().unwrap().port();
        for to in ["127.0.0.1", "::1"] {
            let ip: std::net::IpAddr = to.parse().unwrap();
            tokio::net::TcpStream::connect((ip, port))
                .await
                .unwrap_or_else(|e| panic!("{to}: {e}"));
            ls[0].accept().await.unwrap();
        }
    }

    #[tokio::test]
    async fn host_names_bind_every_address_once() {
        let ls = bind_all(&[
            ListenAddr::Host("localhost".into(), 0),
            ListenAddr::Addr("127.0.0.1:0".parse().unwrap()),
        ])
        .unwrap();
        let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
        assert!(
            addrs.iter().any(|a| a.ip() == Ipv4Addr::LOCALHOST),
            "{addrs:?}"
        );
    }
}
