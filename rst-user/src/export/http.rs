//! The HTTP server under `/metrics`: hyper's HTTP/1 connections behind an accept loop
//! that no client can starve by holding connections open.
//!
//! * **Timeouts**, one deadline per connection at a time:
//!   - a request's head (request line and headers) must be complete within
//!     [`Limits::read_header_timeout`] of its first byte, or of the accept for a
//!     connection's first request (slowloris, and connections that never send anything);
//!   - a connection between requests is closed after [`Limits::idle_timeout`] without the
//!     first byte of a new one (keep-alive);
//!   - a response must reach the kernel within [`Limits::idle_timeout`] of its first
//!     byte (a client that does not read what it asked for); that connection is aborted
//!     (SO_LINGER 0), so the kernel keeps no orphan socket full of unsent data.
//!
//!   A request being answered has no deadline: rendering `/metrics` is bounded work.
//! * **A cap**, [`Limits::max_connections`] open at once. A connection over the cap is
//!   not refused outright: the connection that was accepted longest ago among those with
//!   no request in progress is closed to make room (*evicted*). So idle and slow-header
//!   connections, however many, cannot keep a scrape out: a scrape sends its request at
//!   once and is answered before it could be evicted. Only when every open connection is
//!   in the middle of a request (or of writing a response) is the new one answered `503`
//!   and closed (*rejected*; up to [`LINGERING_REJECTS`] at a time with a graceful
//!   close, so the client reads the 503 rather than a reset). Running out of file
//!   descriptors (EMFILE) is handled like the cap: evict one, accept again.
//! * **Graceful shutdown**: when the shutdown future resolves the listener is closed,
//!   connections between requests are closed at once and requests in progress finish
//!   (for at most [`SHUTDOWN_GRACE`]).
//!
//! * **TLS** (`tls_server_config` of `--web.config.file`): the handshake is part of the
//!   first request's head and has its deadline; a client that sends plain HTTP to a TLS
//!   listener is answered `400` (as Go's server does) and closed.
//! * **Several listeners** (`--web.listen-address` repeated) share one accept loop, one
//!   cap and one set of counters.
//!
//! [`HttpStats`] counts all of it for the exposition.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    fmt::Write as _,
    future::Future,
    io::{self, Read as _, Write as _},
    net::SocketAddr,
    os::fd::{AsRawFd as _, RawFd},
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    task::JoinSet,
    time::{Instant, sleep, sleep_until},
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Backlog of the listening socket: connections the kernel completes before rstmon
/// accepts them. Larger than the usual 128 so that a burst of connections is not met by
/// dropped SYNs (and a scrape by a 1 s SYN retransmission).
pub const LISTEN_BACKLOG: u32 = 1024;
/// How long requests in progress may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Largest read buffer of one connection (hyper's minimum is 8 KiB, its default about
/// 400 KiB): a request head larger than this is answered 431. Bounds the memory that
/// slow-header connections can make rstmon hold.
const MAX_BUF_SIZE: usize = 16 * 1024;
/// Body of the `503` a rejected connection gets.
const REJECT_BODY: &str = "rstmon: too many HTTP connections in progress; retry later\n";
/// Rejected connections closed gracefully at a time: 503, FIN, then what the client
/// still sends is read (for at most [`REJECT_LINGER`]) so that the close is not a reset
/// that could destroy the 503 before the client reads it. Beyond this many (a flood),
/// rejected connections are answered and closed at once.
const LINGERING_REJECTS: usize = 64;
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// At most one warning per this long about accept errors.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the server enforces (`--web.read-header-timeout`, `--web.idle-timeout`,
/// `--web.max-connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete within this of its first byte (of the accept,
    /// for a connection's first request).
    pub read_header_timeout: Duration,
    /// A connection between requests is closed after this without a new request; a
    /// response must reach the kernel within this of its first byte.
    pub idle_timeout: Duration,
    /// Connections open at once (at least 1).
    pub max_connections: usize,
}

/// Why the server closed a connection (the `reason` label of
/// `rstmon_http_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// To make room for a new connection at the cap (or when out of file descriptors).
    Evicted,
    /// The request head was not complete in time.
    HeaderTimeout,
    /// No new request in time after the last one.
    IdleTimeout,
    /// The client did not read its response in time.
    WriteTimeout,
}

impl Close {
    pub const ALL: [Close; 4] = [
        Close::Evicted,
        Close::HeaderTimeout,
        Close::IdleTimeout,
        Close::WriteTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Close::Evicted => "evicted",
            Close::HeaderTimeout => "header_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::WriteTimeout => "write_timeout",
        }
    }
}

/// The server's own counters, exported with `/metrics` ([`HttpStats::render`]).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now (accepted, not yet closed).
    pub connections_open: AtomicU64,
    /// New connections answered 503 and closed at the cap, every connection being in a
    /// request: `rstmon_http_connections_rejected_total`.
    pub connections_rejected: AtomicU64,
    /// Connections the server closed, indexed by `Close as usize`
    /// (see [`HttpStats::closed`]): `rstmon_http_connections_closed_total{reason}`.
    pub connections_closed: [AtomicU64; Close::ALL.len()],
}

impl HttpStats {
    /// The counter of connections closed for `why`.
    pub fn closed(&self, why: Close) -> &AtomicU64 {
        &self.connections_closed[why as usize]
    }

    /// The server's metric families in the Prometheus text format (0.0.4), sorted by
    /// name: `rstmon_http_connections_closed_total{reason}`,
    /// `rstmon_http_connections_open`, `rstmon_http_connections_rejected_total`.
    /// Written here, not through the exposition's family builder: fixed label values
    /// and integer samples need no escaping.
    pub fn render(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(1024);
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "rstmon_http_connections_closed_total",
            "HTTP connections the server closed: to make room for a new one at --web.max-connections (evicted: the oldest with no request in progress), or on a timeout (header_timeout, idle_timeout, write_timeout).",
            "counter",
        );
        let mut closed: Vec<(&str, u64)> = Close::ALL
            .iter()
            .map(|&why| (why.label(), load(self.closed(why))))
            .collect();
        closed.sort_unstable();
        for (reason, n) in closed {
            let _ = writeln!(
                out,
                "rstmon_http_connections_closed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "rstmon_http_connections_open",
            "HTTP connections open now (at most --web.max-connections).",
            "gauge",
        );
        let _ = writeln!(
            out,
            "rstmon_http_connections_open {}",
            load(&self.connections_open)
        );
        family(
            &mut out,
            "rstmon_http_connections_rejected_total",
            "New HTTP connections answered 503 and closed: --web.max-connections were open and every one was in the middle of a request.",
            "counter",
        );
        let _ = writeln!(
            out,
            "rstmon_http_connections_rejected_total {}",
            load(&self.connections_rejected)
        );
        out
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that the connection cap and
/// not the default 1 024 descriptors bounds the server. Never fails: says at debug
/// level what it did.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into memory we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let e = io::Error::last_os_error();
        debug!("RLIMIT_NOFILE: cannot read it: {e}; left as it is");
        return;
    }
    if lim.rlim_cur >= lim.rlim_max {
        debug!(
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "RLIMIT_NOFILE: soft limit already at the hard limit"
        );
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one `rlimit` from memory we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = io::Error::last_os_error();
        debug!(
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            "RLIMIT_NOFILE: cannot raise the soft limit: {e}; left as it is"
        );
        return;
    }
    debug!(
        from = lim.rlim_cur,
        to = lim.rlim_max,
        "RLIMIT_NOFILE: raised the soft limit to the hard limit"
    );
}

/// Parses a duration flag: a number and a unit, `ms`, `s`, `m` or `h` (`10s`, `1.5s`,
/// `500ms`, `2m`); a bare number is seconds. Must be more than 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (e.g. 10s, 500ms, 2m)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than 0"));
    }
    Ok(d)
}

/// Serves HTTP/1 (over TLS with `tls`) on `listeners` until `shutdown` resolves,
/// answering every request with `handler`, under `limits` (see the module
/// documentation), counting into `stats`. Errors from single connections or accepts
/// are logged, never fatal.
pub async fn serve<H, F>(
    listeners: Vec<TcpListener>,
    limits: Limits,
    stats: Arc<HttpStats>,
    tls: Option<TlsAcceptor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    // A task of its own, not the caller's future: the scheduler then runs it in turn
    // with the connections' tasks (a current-thread runtime polls the future it blocks
    // on ahead of every batch of tasks).
    let accepting = tokio::spawn(accept_loop(listeners, limits, stats, tls, handler, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    if let Err(e) = accepting.await {
        warn!("HTTP server task: {e}");
    }
}

/// Accepts a new connection at most this many times in a row before letting the
/// connections' tasks run: a connection is evicted only after its task has looked for
/// a request, so a burst must not fill the table with connections not yet looked at
/// (which could be neither evicted nor answered: new ones would be rejected).
const ACCEPT_BATCH: usize = 16;

/// The next connection of any of `listeners`, looked at in turn from `*next` so that
/// none starves the others.
async fn accept_any(
    listeners: &[TcpListener],
    next: &mut usize,
) -> io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (*next + k) % n;
            if let Poll::Ready(r) = listeners[i].poll_accept(cx) {
                *next = (i + 1) % n;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

async fn accept_loop<H, F>(
    listeners: Vec<TcpListener>,
    limits: Limits,
    stats: Arc<HttpStats>,
    tls: Option<TlsAcceptor>,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let registry = Arc::new(Registry::default());
    let lingering = Arc::new(Semaphore::new(LINGERING_REJECTS));
    let batch = ACCEPT_BATCH.min(limits.max_connections / 2).max(1);
    let mut tasks = JoinSet::new();
    let mut warned: Option<Instant> = None;
    let mut accepted_in_a_row = 0;
    let mut next = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        accepted_in_a_row += 1;
        if accepted_in_a_row > batch {
            accepted_in_a_row = 0;
            tokio::task::yield_now().await;
        }
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = accept_any(&listeners, &mut next) => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_error(e, &registry, &stats, &mut warned).await;
                continue;
            }
        };
        let Some((id, conn)) = registry.admit(limits.max_connections, &stats) else {
            stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
            match lingering.clone().try_acquire_owned() {
                Ok(permit) => {
                    tasks.spawn(reject_lingering(stream, permit));
                }
                Err(_) => reject(stream),
            }
            continue;
        };
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        let leave = Leave {
            id,
            registry: registry.clone(),
            stats: stats.clone(),
        };
        tasks.spawn(drive(
            stream,
            conn,
            leave,
            limits,
            tls.clone(),
            handler.clone(),
            stop.clone(),
        ));
    }
    drop(listeners);
    let open = tasks.len();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open,
            left = tasks.len(),
            "HTTP: requests still in progress {SHUTDOWN_GRACE:?} after shutdown; closing them"
        );
        tasks.shutdown().await;
    }
}

/// Handles a failed accept: out of descriptors is met like the cap (evict the oldest
/// connection between requests, then accept again); a client that gave up is nothing;
/// anything else waits a little (the error would likely repeat at once).
async fn accept_error(
    e: io::Error,
    registry: &Registry,
    stats: &HttpStats,
    warned: &mut Option<Instant>,
) {
    let mut warn_once = |what: &str| {
        if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            let open = stats.connections_open.load(Ordering::Relaxed);
            warn!("accepting an HTTP connection: {e} ({open} open); {what}");
        }
    };
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            warn_once("closing the oldest idle connections to make room");
            let freed = registry.evict_one(stats);
            sleep(Duration::from_millis(if freed { 5 } else { 100 })).await;
        }
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO) => {}
        _ => {
            warn_once("retrying");
            sleep(Duration::from_millis(100)).await;
        }
    }
}

fn reject_response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{REJECT_BODY}",
        REJECT_BODY.len()
    )
}

/// Answers a connection over the cap `503` and closes it gracefully (see
/// [`LINGERING_REJECTS`]).
async fn reject_lingering(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(reject_response().as_bytes()).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Answers a connection over the cap `503` and closes it at once, without waiting on
/// it: the socket is non-blocking and a new connection's send buffer is empty, so one
/// write goes out whole. What the client sent already is read first, so that the close
/// is a FIN unless more arrives later.
fn reject(stream: TcpStream) {
    let Ok(mut s) = stream.into_std() else {
        return;
    };
    let mut buf = [0u8; 4096];
    for _ in 0..4 {
        match s.read(&mut buf) {
            Ok(n) if n == buf.len() => {}
            _ => break,
        }
    }
    let _ = s.write(reject_response().as_bytes());
}

/// Makes closing `fd` abort the connection (a reset, unsent data dropped) rather than
/// leave the kernel an orphaned socket trying to deliver data to a client that does not
/// read it.
fn abort_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's socket, still open (its owner is alive in the
    // caller); setsockopt reads one `linger` of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// What a client that speaks plain HTTP to a TLS listener is told (Go's words).
const PLAIN_TO_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Drives one connection: the TLS handshake if any, then hyper's HTTP/1 state machine,
/// this connection's deadline, eviction and shutdown.
async fn drive<H, F>(
    stream: TcpStream,
    conn: Arc<Conn>,
    leave: Leave,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let tracked = Tracked {
        io: stream,
        conn: conn.clone(),
    };
    let Some(acceptor) = tls else {
        return http_conn(tracked, fd, conn, leave, limits, handler, stop).await;
    };
    // The handshake counts as the first request's head: same deadline.
    let head_deadline = Instant::now() + limits.read_header_timeout;
    let handshake = async {
        let mut first = [0u8; 1];
        match tracked.io.peek(&mut first).await {
            // A TLS record starts with its content type, 22 for a handshake.
            Ok(1) if first[0] == 0x16 => {}
            Ok(1) => {
                let mut io = tracked.io;
                let _ = io.write_all(PLAIN_TO_TLS).await;
                let _ = io.shutdown().await;
                debug!("HTTP: plain HTTP on a TLS listener answered 400");
                return None;
            }
            _ => return None,
        }
        match acceptor.accept(tracked).await {
            Ok(s) => Some(s),
            Err(e) => {
                debug!("TLS handshake: {e}");
                None
            }
        }
    };
    let io = tokio::select! {
        biased;
        io = handshake => io,
        () = conn.evict.notified() => None,
        _ = stop.changed() => None,
        () = sleep_until(head_deadline) => {
            leave.stats.closed(Close::HeaderTimeout).fetch_add(1, Ordering::Relaxed);
            debug!(reason = Close::HeaderTimeout.label(), "HTTP connection closed on a timeout");
            None
        }
    };
    if let Some(io) = io {
        http_conn(io, fd, conn, leave, limits, handler, stop).await;
    }
}

/// hyper's HTTP/1 state machine on `io` (the connection's [`Tracked`] socket, or TLS
/// over it), with the connection's deadline, eviction and shutdown.
async fn http_conn<IO, H, F>(
    io: IO,
    fd: RawFd,
    conn: Arc<Conn>,
    leave: Leave,
    limits: Limits,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let io = TokioIo::new(io);
    let in_service = conn.clone();
    let service = service_fn(move |req| {
        in_service.on_request();
        let answer = handler(req);
        let answered = Answered(in_service.clone());
        async move {
            let response = answer.await;
            drop(answered);
            Ok::<_, Infallible>(response)
        }
    });
    let http = http1::Builder::new()
        .header_read_timeout(None)
        .max_buf_size(MAX_BUF_SIZE)
        .serve_connection(io, service);
    let mut http = pin!(http);
    let mut deadline = pin!(sleep_until(Instant::now() + limits.read_header_timeout));
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            r = http.as_mut() => {
                if let Err(e) = r {
                    debug!("HTTP connection: {e}");
                }
                return;
            }
            () = conn.evict.notified() => {
                if conn.evictable() {
                    debug!("HTTP connection evicted to make room");
                    return;
                }
                // It started a request since it was picked: close it after the answer.
                http.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if conn.quiet() {
                    return;
                }
                http.as_mut().graceful_shutdown();
            }
            () = conn.rearm.notified() => {}
            () = deadline.as_mut() => {}
        }
        match conn.deadline(&limits) {
            Some((at, why)) if at <= Instant::now() => {
                if why == Close::WriteTimeout {
                    abort_on_close(fd);
                }
                leave.stats.closed(why).fetch_add(1, Ordering::Relaxed);
                debug!(reason = why.label(), "HTTP connection closed on a timeout");
                return;
            }
            Some((at, _)) => deadline.as_mut().reset(at),
            // Nothing to time out while a request is answered: wait for a re-arm.
            None => deadline
                .as_mut()
                .reset(Instant::now() + Duration::from_secs(86_400)),
        }
    }
}

/// Takes a connection out of the [`Registry`] and the open count when its task ends.
struct Leave {
    id: u64,
    registry: Arc<Registry>,
    stats: Arc<HttpStats>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.registry.remove(self.id);
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks the end of a request's answer (also when the connection goes away first).
struct Answered(Arc<Conn>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.on_response();
    }
}

/// Where a connection is, for its deadline and for eviction.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head, since the accept or the head's first byte.
    Head(Instant),
    /// Between requests, since the last answer; no byte of a new request yet.
    Idle(Instant),
    /// A request is being answered.
    Busy,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Since when response bytes have been waiting to reach the kernel, if any are.
    unflushed_since: Option<Instant>,
    /// A read has found nothing to read: the client has had its chance to send a
    /// request (a connection accepted but not yet looked at is never evicted).
    waited: bool,
}

/// One connection's state, shared by its task, its socket wrapper ([`Tracked`]), its
/// service and the [`Registry`]. Everything but eviction happens on the connection's
/// own task.
#[derive(Debug)]
struct Conn {
    state: Mutex<State>,
    /// The deadline appeared or moved earlier: the task re-arms its timer.
    rearm: Notify,
    /// Close the connection if no request is in progress, else after the answer.
    evict: Notify,
}

impl Conn {
    fn new() -> Self {
        Self {
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now()),
                unflushed_since: None,
                waited: false,
            }),
            rearm: Notify::new(),
            evict: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No request in progress and nothing left to write.
    fn quiet(&self) -> bool {
        let s = self.lock();
        s.unflushed_since.is_none() && !matches!(s.phase, Phase::Busy)
    }

    /// [`Conn::quiet`], and it has had its chance to send a request.
    fn evictable(&self) -> bool {
        let s = self.lock();
        s.waited && s.unflushed_since.is_none() && !matches!(s.phase, Phase::Busy)
    }

    /// When the connection must be closed if nothing changes, and why.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Close)> {
        let s = self.lock();
        if let Some(t) = s.unflushed_since {
            return Some((t + limits.idle_timeout, Close::WriteTimeout));
        }
        match s.phase {
            Phase::Head(t) => Some((t + limits.read_header_timeout, Close::HeaderTimeout)),
            Phase::Idle(t) => Some((t + limits.idle_timeout, Close::IdleTimeout)),
            Phase::Busy => None,
        }
    }

    /// Bytes came in: between requests, that starts a request head.
    fn on_read(&self) {
        let mut s = self.lock();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Head(Instant::now());
            drop(s);
            self.rearm.notify_one();
        }
    }

    /// A read found nothing.
    fn on_wait(&self) {
        self.lock().waited = true;
    }

    /// Response bytes reached the kernel; more may be waiting until the next flush.
    fn on_write(&self) {
        let mut s = self.lock();
        if s.unflushed_since.is_none() {
            s.unflushed_since = Some(Instant::now());
            drop(s);
            self.rearm.notify_one();
        }
    }

    /// Everything written reached the kernel.
    fn on_flush(&self) {
        self.lock().unflushed_since = None;
    }

    /// hyper has a request head and calls the service.
    fn on_request(&self) {
        self.lock().phase = Phase::Busy;
    }

    /// The service has answered.
    fn on_response(&self) {
        self.lock().phase = Phase::Idle(Instant::now());
        self.rearm.notify_one();
    }
}

/// The open connections, in accept order, for eviction.
#[derive(Debug, Default)]
struct Registry(Mutex<Slots>);

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Slots {
    /// Evicts the connection accepted longest ago among those with no request in
    /// progress; false if there is none.
    fn evict_oldest(&mut self, stats: &HttpStats) -> bool {
        let Some(id) = self
            .open
            .iter()
            .find(|(_, c)| c.evictable())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(c) = self.open.remove(&id) {
            c.evict.notify_one();
        }
        stats.closed(Close::Evicted).fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection, evicting one at the cap; `None` when every open
    /// connection is in a request.
    fn admit(&self, max: usize, stats: &HttpStats) -> Option<(u64, Arc<Conn>)> {
        let mut slots = self.lock();
        if slots.open.len() >= max.max(1) && !slots.evict_oldest(stats) {
            return None;
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let conn = Arc::new(Conn::new());
        slots.open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn evict_one(&self, stats: &HttpStats) -> bool {
        self.lock().evict_oldest(stats)
    }

    fn remove(&self, id: u64) {
        self.lock().open.remove(&id);
    }
}

/// The connection's socket, telling its [`Conn`] what hyper reads and writes.
struct Tracked {
    io: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        match r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.conn.on_read(),
            Poll::Pending => this.conn.on_wait(),
            _ => {}
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            this.conn.on_write();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            this.conn.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = r {
            this.conn.on_flush();
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        sync::Semaphore,
    };

    use super::*;
    use crate::export::listen;

    fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        listen::bind(addr, false)
    }

    const LIMITS: Limits = Limits {
        read_header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        max_connections: 8,
    };
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

    struct Server {
        addr: SocketAddr,
        stats: Arc<HttpStats>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<()>,
    }

    /// A server on 127.0.0.1 answering "ok"; with `gate`, each answer first takes a
    /// permit (the test holds requests in progress by not adding any).
    async fn start(limits: Limits, gate: Option<Arc<Semaphore>>) -> Server {
        let listener = bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(HttpStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = move |_req: Request<Incoming>| {
            let gate = gate.clone();
            async move {
                if let Some(g) = gate {
                    g.acquire().await.unwrap().forget();
                }
                Response::new(Full::new(Bytes::from_static(b"ok")))
            }
        };
        let done = tokio::spawn(serve(
            vec![listener],
            limits,
            stats.clone(),
            None,
            handler,
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            stats,
            stop: Some(stop),
            done,
        }
    }

    impl Server {
        async fn connect(&self) -> TcpStream {
            let s = TcpStream::connect(self.addr).await.unwrap();
            // Let the server accept it and read once.
            tokio::time::sleep(Duration::from_millis(5)).await;
            s
        }

        fn closed(&self, why: Close) -> u64 {
            self.stats.closed(why).load(Ordering::Relaxed)
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(Duration::from_secs(5), self.done)
                .await
                .expect("server stops")
                .unwrap();
        }
    }

    /// Reads until EOF or reset; what was read, and when the server closed.
    async fn read_to_close(s: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
        let mut got = Vec::new();
        let r = tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        (got, r.expect("the server closes the connection"))
    }

    fn assert_between(what: &str, took: Duration, min: Duration, max: Duration) {
        assert!(
            (min..=max).contains(&took),
            "{what}: closed after {took:?}, want {min:?}..={max:?}"
        );
    }

    #[test]
    fn durations() {
        let ok = |s, d| assert_eq!(parse_duration(s), Ok(d), "{s}");
        ok("10s", Duration::from_secs(10));
        ok("10", Duration::from_secs(10));
        ok("1.5s", Duration::from_millis(1500));
        ok("500ms", Duration::from_millis(500));
        ok("2m", Duration::from_secs(120));
        ok("1h", Duration::from_secs(3600));
        for bad in [
            "", "0", "0s", "-1s", "s", "10x", "1e3", "nan", "inf", "1..2s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn families_are_complete_and_sorted() {
        let stats = HttpStats::default();
        stats.connections_rejected.store(3, Ordering::Relaxed);
        stats.closed(Close::Evicted).store(2, Ordering::Relaxed);
        stats.connections_open.store(1, Ordering::Relaxed);
        let text = stats.render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "rstmon_http_connections_closed_total{reason=\"evicted\"} 2",
                "rstmon_http_connections_closed_total{reason=\"header_timeout\"} 0",
                "rstmon_http_connections_closed_total{reason=\"idle_timeout\"} 0",
                "rstmon_http_connections_closed_total{reason=\"write_timeout\"} 0",
                "rstmon_http_connections_open 1",
                "rstmon_http_connections_rejected_total 3",
            ]
        );
        assert_eq!(text.matches("# TYPE ").count(), 3, "{text}");
        assert!(text.ends_with('\n'));
    }

    /// Nothing sent, a partial head, and a head dripped a byte at a time: all closed at
    /// the header timeout.
    #[tokio::test]
    async fn slow_headers_closed_at_read_header_timeout() {
        let srv = start(LIMITS, None).await;
        let t0 = Instant::now();
        let mut silent = srv.connect().await;
        let mut partial = srv.connect().await;
        partial.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        let mut drip = srv.connect().await;
        let dripper = async {
            for b in REQUEST[..REQUEST.len() - 2].iter() {
                if drip.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            read_to_close(&mut drip, Duration::from_secs(3)).await
        };
        let (a, b, c) = tokio::join!(
            read_to_close(&mut silent, Duration::from_secs(3)),
            read_to_close(&mut partial, Duration::from_secs(3)),
            dripper,
        );
        let (min, max) = (Duration::from_millis(250), Duration::from_millis(600));
        for (what, (got, at)) in [("silent", a), ("partial", b), ("drip", c)] {
            assert!(got.is_empty(), "{what}: got {got:?}");
            assert_between(what, at - t0, min, max);
        }
        assert_eq!(srv.closed(Close::HeaderTimeout), 3);
        srv.stop().await;
    }

    /// After an answer, a keep-alive connection gets the idle timeout, not the header one.
    #[tokio::test]
    async fn keep_alive_closed_at_idle_timeout() {
        let srv = start(LIMITS, None).await;
        let mut s = srv.connect().await;
        s.write_all(REQUEST).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        let t0 = Instant::now();
        let (got, at) = read_to_close(&mut s, Duration::from_secs(3)).await;
        assert!(got.is_empty());
        assert_between(
            "keep-alive",
            at - t0,
            Duration::from_millis(550),
            Duration::from_millis(900),
        );
        assert_eq!(srv.closed(Close::IdleTimeout), 1);
        srv.stop().await;
    }

    /// At the cap, a new connection closes the oldest idle one and is answered.
    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_is_evicted() {
        let srv = start(LIMITS, None).await;
        let mut idle = Vec::new();
        for _ in 0..LIMITS.max_connections {
            idle.push(srv.connect().await);
        }
        let mut s = srv.connect().await;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let (got, _) = read_to_close(&mut s, Duration::from_secs(1)).await;
        assert!(got.starts_with(b"HTTP/1.0 200"), "{got:?}");
        let (got, at) = read_to_close(&mut idle[0], Duration::from_secs(1)).await;
        assert!(got.is_empty());
        assert!(at.elapsed() < Duration::from_millis(200), "evicted late");
        assert_eq!(srv.closed(Close::Evicted), 1);
        assert_eq!(srv.stats.connections_rejected.load(Ordering::Relaxed), 0);
        srv.stop().await;
    }

    /// At the cap with every connection in a request, a new one gets 503 at once; the
    /// held requests finish normally once released.
    #[tokio::test]
    async fn at_the_cap_with_every_connection_busy_new_ones_get_503() {
        let gate = Arc::new(Semaphore::new(0));
        let srv = start(LIMITS, Some(gate.clone())).await;
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_connections {
            let mut s = srv.connect().await;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..3 {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(srv.addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
            let (got, at) = read_to_close(&mut s, Duration::from_secs(1)).await;
            assert!(got.starts_with(b"HTTP/1.1 503"), "{got:?}");
            assert!(
                at - t0 < Duration::from_millis(200),
                "503 took {:?}",
                at - t0
            );
        }
        assert_eq!(srv.stats.connections_rejected.load(Ordering::Relaxed), 3);
        gate.add_permits(held.len());
        for s in &mut held {
            let (got, _) = read_to_close(s, Duration::from_secs(1)).await;
            assert!(got.starts_with(b"HTTP/1.0 200"), "{got:?}");
        }
        srv.stop().await;
    }

    /// A client that does not read its responses is cut at the idle timeout.
    #[tokio::test]
    async fn unread_responses_closed_at_write_timeout() {
        let big = Bytes::from(vec![b'x'; 32 << 20]);
        let listener = bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(HttpStats::default());
        let handler = move |_req: Request<Incoming>| {
            let big = big.clone();
            async move { Response::new(Full::new(big)) }
        };
        let server = tokio::spawn(serve(
            vec![listener],
            LIMITS,
            stats.clone(),
            None,
            handler,
            std::future::pending(),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(REQUEST).await.unwrap();
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), async {
            while stats.closed(Close::WriteTimeout).load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("write timeout");
        assert_between(
            "unread response",
            t0.elapsed(),
            Duration::from_millis(550),
            Duration::from_millis(900),
        );
        server.abort();
    }

    /// Shutdown closes idle connections at once and lets a request in progress finish.
    #[tokio::test]
    async fn shutdown_closes_idle_and_finishes_requests_in_progress() {
        let gate = Arc::new(Semaphore::new(0));
        let srv = start(LIMITS, Some(gate.clone())).await;
        let mut idle = srv.connect().await;
        let mut busy = srv.connect().await;
        busy.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let stopping = tokio::spawn(srv.stop());
        let (got, at) = read_to_close(&mut idle, Duration::from_secs(1)).await;
        assert!(got.is_empty());
        assert!(at - t0 < Duration::from_millis(100), "idle closed late");
        assert!(
            !stopping.is_finished(),
            "stopped before the request finished"
        );
        gate.add_permits(1);
        let (got, _) = read_to_close(&mut busy, Duration::from_secs(1)).await;
        assert!(got.starts_with(b"HTTP/1.0 200"), "{got:?}");
        stopping.await.unwrap();
    }
}
