//! The HTTP server of `rstmon run` under connections that try to starve it: thousands
//! of idle and slow-header connections, keep-alive connections left idle, clients that
//! do not read their responses, more connections than `--web.max-connections`; the
//! listen address `:0`; the routes; shutdown with connections open.
//!
//! Privileged: needs root (the daemon loads BPF; the tests make network namespaces).
//! Run with `--test-threads=1` (`cargo xtask test` does): tests change the process's
//! RLIMIT_NOFILE and the daemons share fixed ports inside their namespaces.
//!
//! Latencies are printed, and asserted only against generous functional bounds:
//! performance proper is for benchmarks.

mod common;

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd as _,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use common::{IO_TIMEOUT, Metrics, http_get, rstmon};
use rst_testkit::process::{self, Collector, wait_timeout};
use rst_user::netns::{Ns, Pair};

const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9745));
/// A partial request head, never completed.
const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost:";
const SCRAPE_11: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: rstmon\r\n\r\n";
const SCRAPE_10: &[u8] = b"GET /metrics HTTP/1.0\r\n\r\n";

const OPEN: &str = "rstmon_http_connections_open";
const REJECTED: &str = "rstmon_http_connections_rejected_total";
const CLOSED: &str = "rstmon_http_connections_closed_total";

fn ns() -> Ns {
    Ns::new().unwrap_or_else(|e| panic!("creating a namespace (needs root and iproute2): {e}"))
}

fn closed(m: &Metrics, reason: &str) -> i64 {
    m.value(CLOSED, &[("reason", reason)]) as i64
}

/// (soft, hard) RLIMIT_NOFILE of this process.
fn nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into memory we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    (lim.rlim_cur, lim.rlim_max)
}

fn set_soft_nofile(soft: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: nofile().1,
    };
    // SAFETY: setrlimit reads one rlimit from memory we own.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit({soft}): {}", io::Error::last_os_error());
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; panics if that is less
/// than `need`.
fn need_fds(need: u64) {
    let (_, hard) = nofile();
    assert!(
        hard >= need,
        "this test needs {need} file descriptors; the hard RLIMIT_NOFILE is {hard}"
    );
    set_soft_nofile(hard);
}

/// `n` connections to `to` from inside `ns`, each sent `first` (if any), with the time
/// each was connected.
fn connect_many(
    ns: &Ns,
    to: SocketAddr,
    n: usize,
    first: Option<&[u8]>,
) -> (Vec<TcpStream>, Vec<Instant>) {
    ns.run(|| {
        let mut socks = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("connection #{i} to {to}: {e}"));
            at.push(Instant::now());
            if let Some(bytes) = first {
                s.write_all(bytes)
                    .unwrap_or_else(|e| panic!("connection #{i}: sending: {e}"));
            }
            socks.push(s);
        }
        (socks, at)
    })
    .unwrap_or_else(|e| panic!("entering {}: {e}", ns.name))
}

/// Reads one HTTP/1.1 response (head and a `content-length` body); its status.
fn read_response(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        let n = s.read(&mut buf).expect("reading a response");
        assert!(n > 0, "closed before a response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    while raw.len() < head_end + len {
        let n = s.read(&mut buf).expect("reading a body");
        assert!(n > 0, "closed within a body");
        raw.extend_from_slice(&buf[..n]);
    }
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"))
}

/// Sends `request` on a new connection from inside `ns` and reads until the server
/// closes: the whole response as text, and how long it took.
fn exchange(ns: &Ns, to: SocketAddr, request: &[u8]) -> (String, Duration) {
    ns.run(|| {
        let t0 = Instant::now();
        let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.write_all(request)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok::<_, io::Error>((String::from_utf8_lossy(&raw).into_owned(), t0.elapsed()))
    })
    .and_then(|r| r)
    .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(request)))
}

/// Waits (at most `within`) until the server has closed each socket (EOF or reset;
/// response bytes are read and dropped); when each was seen closed, `None` if not.
fn wait_closed(socks: &[&TcpStream], within: Duration) -> Vec<Option<Instant>> {
    wait_closed_how(socks, within, true)
}

/// [`wait_closed`] without reading anything: a client that does not read its
/// responses (the peer's FIN or reset is seen with the data still unread).
fn wait_closed_unread(socks: &[&TcpStream], within: Duration) -> Vec<Option<Instant>> {
    wait_closed_how(socks, within, false)
}

fn wait_closed_how(socks: &[&TcpStream], within: Duration, read: bool) -> Vec<Option<Instant>> {
    let deadline = Instant::now() + within;
    let mut seen: Vec<Option<Instant>> = vec![None; socks.len()];
    for s in socks {
        s.set_nonblocking(true).unwrap();
    }
    let mut buf = [0u8; 64 * 1024];
    loop {
        let pending: Vec<usize> = (0..socks.len()).filter(|&i| seen[i].is_none()).collect();
        let now = Instant::now();
        if pending.is_empty() || now >= deadline {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: socks[i].as_raw_fd(),
                events: if read {
                    libc::POLLIN | libc::POLLRDHUP
                } else {
                    libc::POLLRDHUP
                },
                revents: 0,
            })
            .collect();
        let wait = (deadline - now).min(Duration::from_millis(20)).as_millis() as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        assert!(rc >= 0, "poll: {}", io::Error::last_os_error());
        let now = Instant::now();
        for (k, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let i = pending[k];
            if !read {
                seen[i] = Some(now);
                continue;
            }
            loop {
                match { socks[i] }.read(&mut buf) {
                    Ok(0) => seen[i] = Some(now),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => seen[i] = Some(now),
                }
                break;
            }
        }
    }
    seen
}

/// For each socket, how long after `since[i]` it was closed; panics naming the first
/// one that was not closed, or was closed outside `min..=max`.
fn assert_closed_between(
    what: &str,
    seen: &[Option<Instant>],
    since: &[Instant],
    min: Duration,
    max: Duration,
) -> (Duration, Duration) {
    let mut took = Vec::new();
    for (i, (s, t0)) in seen.iter().zip(since).enumerate() {
        let Some(s) = s else {
            panic!("{what}: connection #{i} not closed by the server within {max:?}");
        };
        let d = s.saturating_duration_since(*t0);
        assert!(
            (min..=max).contains(&d),
            "{what}: connection #{i} closed after {d:?}, want {min:?}..={max:?}"
        );
        took.push(d);
    }
    let lo = took.iter().min().copied().unwrap_or_default();
    let hi = took.iter().max().copied().unwrap_or_default();
    println!(
        "{what}: {} closed by the server {lo:.2?}..{hi:.2?} after the reference point",
        took.len()
    );
    (lo, hi)
}

/// Scrapes `n` times; the latencies (all 200s).
fn scrape_latencies(d: &common::Daemon, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let r = d.get("/metrics");
            assert_eq!(r.status, 200, "scrape #{i}: HTTP {}:\n{}", r.status, r.body);
            r.elapsed
        })
        .collect()
}

/// 2 000 idle and 2 000 slow-header connections held open: a scrape still answers,
/// with the default cap (which evicts the oldest to make room) and with a cap above
/// them all (every one held: the daemon, started with a soft limit of 1 024
/// descriptors, raised it to the hard limit).
#[test]
fn scrape_answers_with_4000_idle_and_slow_header_connections_open() {
    const EACH: usize = 2000;
    need_fds(2 * EACH as u64 + 512);
    let ns = ns();
    for held_all in [false, true] {
        let mut r = rstmon().listen(LISTEN);
        if held_all {
            r = r.args(["--web.max-connections", "5000"]);
            set_soft_nofile(1024);
        }
        let d = r.start(&ns);
        need_fds(2 * EACH as u64 + 512);
        if held_all {
            let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .unwrap_or_default()
                .to_string();
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                f.get(3),
                f.get(4),
                "the daemon did not raise its soft RLIMIT_NOFILE to the hard one: {line}"
            );
        }
        let before = d.scrape();
        let t0 = Instant::now();
        let (idle, _) = connect_many(&ns, LISTEN, EACH, None);
        let (slow, _) = connect_many(&ns, LISTEN, EACH, Some(PARTIAL_HEAD));
        let opened = t0.elapsed();
        let lat = scrape_latencies(&d, 5);
        let m = d.scrape();
        let what = if held_all {
            "--web.max-connections 5000"
        } else {
            "default --web.max-connections 512"
        };
        println!(
            "{what}: {EACH} idle + {EACH} slow-header connections opened in {opened:.2?}; \
             scrape latencies {lat:.2?}; open {}, evicted +{}, rejected +{}",
            m.value(OPEN, &[]),
            m.delta(&before, CLOSED, &[("reason", "evicted")]),
            m.delta(&before, REJECTED, &[]),
        );
        for (i, l) in lat.iter().enumerate() {
            assert!(
                *l < Duration::from_secs(1),
                "{what}: scrape #{i} took {l:?}"
            );
        }
        assert_eq!(m.delta(&before, REJECTED, &[]), 0, "{what}: rejections");
        if held_all {
            assert_eq!(
                m.value(OPEN, &[]),
                (2 * EACH + 1) as f64,
                "{what}: every connection held (and the scrape's)"
            );
        } else {
            assert!(m.value(OPEN, &[]) <= 512.0, "{what}: over the cap");
            assert!(
                m.delta(&before, CLOSED, &[("reason", "evicted")]) >= (2 * EACH - 512) as i64,
                "{what}: the connections over the cap were evicted"
            );
        }
        drop((idle, slow));
        d.stop();
    }
}

/// With `--web.read-header-timeout 1s --web.idle-timeout 2s`: connections that send
/// nothing, a partial head, or a head a byte at a time are closed 1 s after the
/// connect; keep-alive connections 2 s after their answer, not at 1 s.
#[test]
fn idle_and_slow_header_connections_closed_after_the_timeouts() {
    need_fds(1024);
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args([
            "--web.read-header-timeout",
            "1s",
            "--web.idle-timeout",
            "2s",
        ])
        .start(&ns);
    let before = d.scrape();
    let (silent, silent_at) = connect_many(&ns, LISTEN, 100, None);
    let (partial, partial_at) = connect_many(&ns, LISTEN, 100, Some(PARTIAL_HEAD));
    let (drip, drip_at) = connect_many(&ns, LISTEN, 10, None);
    let (mut kept, _) = connect_many(&ns, LISTEN, 50, None);
    let mut kept_at = Vec::new();
    for s in &mut kept {
        s.write_all(SCRAPE_11).unwrap();
        assert_eq!(read_response(s), 200, "keep-alive scrape");
        kept_at.push(Instant::now());
    }
    let window = Duration::from_secs(4);
    let all: Vec<&TcpStream> = silent
        .iter()
        .chain(&partial)
        .chain(&drip)
        .chain(&kept)
        .collect();
    let seen = thread::scope(|sc| {
        // A byte every 100 ms: the head is never complete within 1 s.
        let dripping = sc.spawn(|| {
            let head = b"GET /metrics HTTP/1.1\r\nHost: rstmon\r\nAccept: */*\r\n\r\n";
            for b in head {
                for mut s in &drip {
                    let _ = s.write(&[*b]);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let seen = wait_closed(&all, window);
        dripping.join().unwrap();
        seen
    });
    let (seen_silent, rest) = seen.split_at(silent.len());
    let (seen_partial, rest) = rest.split_at(partial.len());
    let (seen_drip, seen_kept) = rest.split_at(drip.len());
    let margin = Duration::from_millis(100);
    let late = Duration::from_secs(1);
    let header = Duration::from_secs(1);
    let idle = Duration::from_secs(2);
    for (what, seen, at) in [
        ("nothing sent", seen_silent, &silent_at),
        ("partial head", seen_partial, &partial_at),
        ("head a byte per 100 ms", seen_drip, &drip_at),
    ] {
        assert_closed_between(what, seen, at, header - margin, header + late);
    }
    assert_closed_between(
        "keep-alive after a scrape",
        seen_kept,
        &kept_at,
        idle - margin,
        idle + late,
    );
    let m = d.scrape();
    assert_eq!(
        m.delta(&before, CLOSED, &[("reason", "header_timeout")]),
        210
    );
    assert_eq!(m.delta(&before, CLOSED, &[("reason", "idle_timeout")]), 50);
    d.stop();
}

/// `--web.max-connections 50`: 20 connections over the cap close the 20 oldest idle
/// ones at once (evicted), the newer ones stay, and a scrape is answered.
#[test]
fn over_the_cap_the_oldest_idle_connections_are_evicted() {
    need_fds(1024);
    let ns = ns();
    let d = rstmon()
        .listen(LISTEN)
        .args(["--web.max-connections", "50"])
        .start(&ns);
    let before = d.scrape();
    thread::sleep(Duration::from_millis(100));
    let (first, _) = connect_many(&ns, LISTEN, 50, None);
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let (second, _) = connect_many(&ns, LISTEN, 20, None);
    let seen = wait_closed(
        &first.iter().collect::<Vec<_>>(),
        Duration::from_millis(500),
    );
    let evicted: Vec<usize> = (0..first.len()).filter(|&i| seen[i].is_some()).collect();
    assert_eq!(
        evicted,
        (0..20).collect::<Vec<_>>(),
        "want the 20 oldest evicted"
    );
    let slowest = seen.iter().flatten().map(|s| *s - t0).max().unwrap();
    println!("20 over the cap: the 20 oldest closed within {slowest:.2?}");
    let r = d.get("/metrics");
    assert_eq!(r.status, 200, "scrape at the cap: HTTP {}", r.status);
    println!("scrape at the cap: {:.2?}", r.elapsed);
    let m = r.metrics();
    assert_eq!(m.delta(&before, CLOSED, &[("reason", "evicted")]), 21);
    assert_eq!(m.delta(&before, REJECTED, &[]), 0);
    assert_eq!(m.value(OPEN, &[]), 50.0);
    assert!(
        wait_closed(
            &second.iter().collect::<Vec<_>>(),
            Duration::from_millis(200)
        )
        .iter()
        .all(Option::is_none),
        "the newer connections stay open"
    );
    d.stop();
}

/// `--web.max-connections 50`, every one held by a client that pipelined scrapes and
/// does not read the answers (over a veth, MTU 1500, so the socket buffers fill): new
/// connections are answered 503 at once and counted; the holders are cut at the write
/// timeout (`--web.idle-timeout 3s`), and scrapes work again.
#[test]
fn over_the_cap_with_every_connection_answering_new_ones_get_503() {
    need_fds(1024);
    let p = Pair::new().unwrap_or_else(|e| panic!("creating a veth pair: {e}"));
    let listen = SocketAddr::new(IpAddr::V4(p.a4), 9745);
    let d = rstmon()
        .listen(listen)
        .args(["--web.max-connections", "50", "--web.idle-timeout", "3s"])
        .start(&p.a);
    let before = d.scrape();
    thread::sleep(Duration::from_millis(100));
    let pipelined = SCRAPE_11.repeat(64);
    let (readers, readers_at) = connect_many(&p.b, listen, 50, None);
    for s in &readers {
        let small: libc::c_int = 4096;
        // SAFETY: setsockopt on an open socket with a c_int option value of its size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&small as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
        (&*s).write_all(&pipelined).unwrap();
    }
    // Let the server fill the buffers.
    thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for i in 0..20 {
        let (text, t) = exchange(&p.b, listen, SCRAPE_10);
        assert!(
            text.starts_with("HTTP/1.1 503"),
            "connection #{i} over the cap: want 503, got {text:?}"
        );
        took.push(t);
    }
    println!("20 over the cap, all slots answering: 503 in {took:.2?}");
    for t in &took {
        assert!(*t < Duration::from_secs(1), "a 503 took {t:?}");
    }
    let seen = wait_closed_unread(&readers.iter().collect::<Vec<_>>(), Duration::from_secs(6));
    assert_closed_between(
        "clients not reading",
        &seen,
        &readers_at,
        Duration::from_millis(2900),
        Duration::from_secs(5),
    );
    thread::sleep(Duration::from_millis(100));
    let m = d.scrape();
    assert_eq!(m.delta(&before, REJECTED, &[]), 20);
    assert_eq!(m.delta(&before, CLOSED, &[("reason", "write_timeout")]), 50);
    assert_eq!(closed(&m, "evicted"), closed(&before, "evicted"));
    d.stop();
}

/// Kills the spawned daemon if a test panics before stopping it.
struct Spawned(Option<std::process::Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
            process::forget(c.id() as libc::pid_t);
        }
    }
}

/// `--web.listen-address 127.0.0.1:0` logs the port the kernel chose, and the daemon
/// serves there: `/metrics`, `/`, HEAD, 404 and 405.
#[test]
fn listen_port_0_logs_the_bound_port_and_routes() {
    let ns = ns();
    let mut cmd = rstmon().listen("127.0.0.1:0".parse().unwrap()).command(&ns);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd, None).expect("spawning rstmon");
    let mut stderr = Collector::new(child.stderr.take().unwrap());
    let mut guard = Spawned(Some(child));
    let deadline = Instant::now() + common::START_TIMEOUT;
    let addr: SocketAddr = loop {
        let text = stderr.text();
        if let Some(a) = text
            .lines()
            .filter(|l| l.contains("serving /metrics"))
            .find_map(|l| l.split_once("address=")?.1.split_whitespace().next())
        {
            break a
                .parse()
                .unwrap_or_else(|e| panic!("address in {text:?}: {e}"));
        }
        if let Some(status) = guard.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("rstmon exited ({status}); stderr:\n{text}");
        }
        assert!(Instant::now() < deadline, "no `serving` line:\n{text}");
        thread::sleep(Duration::from_millis(50));
    };
    println!("bound {addr}");
    assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(addr.port(), 0, "logged port 0");
    let r = http_get(&ns, addr, "/metrics").expect("GET /metrics at the logged address");
    assert_eq!(r.status, 200);
    let m = r.metrics();
    assert!(m.get(REJECTED, &[]).is_some(), "{REJECTED} exported");
    assert!(m.get(OPEN, &[]).is_some(), "{OPEN} exported");
    let r = http_get(&ns, addr, "/").expect("GET /");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("href=\"/metrics\""), "{}", r.body);
    assert_eq!(http_get(&ns, addr, "/nope").unwrap().status, 404);
    let (text, _) = exchange(
        &ns,
        addr,
        b"POST /metrics HTTP/1.0\r\ncontent-length: 0\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.0 405"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    let (text, _) = exchange(&ns, addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD answered with a body: {text}"
    );

    let mut child = guard.0.take().unwrap();
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_timeout(&mut child, common::EXIT_TIMEOUT);
    let text = stderr.finish_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after SIGTERM; stderr:\n{text}"
    );
}

/// SIGTERM with idle, slow-header and keep-alive connections open: they are closed at
/// once and the daemon exits 0 promptly.
#[test]
fn sigterm_with_connections_open_exits_promptly() {
    need_fds(1024);
    let ns = ns();
    let d = rstmon().listen(LISTEN).start(&ns);
    let (mut idle, _) = connect_many(&ns, LISTEN, 200, None);
    let (slow, _) = connect_many(&ns, LISTEN, 200, Some(PARTIAL_HEAD));
    let (mut kept, _) = connect_many(&ns, LISTEN, 1, None);
    kept[0].write_all(SCRAPE_11).unwrap();
    assert_eq!(read_response(&mut kept[0]), 200);
    idle.extend(slow);
    idle.extend(kept);
    let t0 = Instant::now();
    let (status, stderr) = d.signal_and_wait(libc::SIGTERM);
    let exited = t0.elapsed();
    assert!(
        status.success(),
        "exit {status} after SIGTERM; stderr:\n{stderr}"
    );
    println!(
        "SIGTERM with {} connections open: exited in {exited:.2?}",
        idle.len()
    );
    assert!(exited < Duration::from_secs(3), "exit took {exited:?}");
    let seen = wait_closed(&idle.iter().collect::<Vec<_>>(), Duration::from_millis(500));
    let open = seen.iter().filter(|s| s.is_none()).count();
    assert_eq!(open, 0, "{open} connections left open after exit");
}
