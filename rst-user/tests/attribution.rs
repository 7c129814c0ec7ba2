//! By whom: workload, process and connection context of resets, on `watch --json`
//! and in `rstmon_workload_resets_total` and the idle histogram. Needs root; run with
//! --test-threads=1 (the tracepoints are host-wide).
//!
//! Processes that must live in a cgroup of their own are this test binary, run again
//! with `RSTMON_HELPER` set (see [`helper`]): moved into the cgroup between fork and
//! exec, before they open a socket.

mod common;

use std::{
    fs,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{Daemon, Metrics, WatchJson, rstmon};
use rst_user::{
    attribute::{cgroup, netns::v2_path, workload},
    netns::{Ns, Pair},
    selftest::{SCENARIOS, set_linger0},
};
use serde_json::Value;

const WORKLOADS: &str = "rstmon_workload_resets_total";
const IDLE: &str = "rstmon_reset_idle_seconds_bucket";

// --- helper processes ----------------------------------------------------------------

/// Not a test: the body of a helper process (`RSTMON_HELPER=<mode>`), a no-op otherwise.
/// * `s3-server`: in namespace `RSTMON_NETNS`, listens on `RSTMON_ADDR` (port 0), prints
///   its port, accepts one connection, reads 4096 bytes, waits, closes (S3);
/// * `refused`: in `RSTMON_NETNS`, connects to `RSTMON_ADDR`, expects ECONNREFUSED.
#[test]
#[ignore = "helper process body, run by the tests below"]
fn helper() {
    let Ok(mode) = std::env::var("RSTMON_HELPER") else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let ns = fs::File::open(env("RSTMON_NETNS")).expect("netns");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
    // SAFETY: a valid namespace fd; setns affects this thread, which makes the sockets.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
    let name = std::ffi::CString::new(mode.clone()).expect("name");
    // SAFETY: PR_SET_NAME with a NUL-terminated string: this thread's comm.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    let addr: SocketAddr = env("RSTMON_ADDR").parse().expect("address");
    match mode.as_str() {
        "s3-server" => {
            let l = TcpListener::bind(addr).expect("bind");
            println!("rstmon-port={}", l.local_addr().expect("local").port());
            io::stdout().flush().expect("flush");
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 4096];
            s.read_exact(&mut buf).expect("read 4096");
            std::thread::sleep(Duration::from_millis(300)); // the other 904 bytes arrive
            drop(s); // close() with unread data: the reset
        }
        "hold" => {
            // Accepts one connection and reads until the peer's reset ends it.
            let l = TcpListener::bind(addr).expect("bind");
            println!("rstmon-port={}", l.local_addr().expect("local").port());
            io::stdout().flush().expect("flush");
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => panic!("FIN, want a reset"),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        "refused" => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            other => panic!("connect to {addr}: {other:?}, want refused"),
        },
        m => panic!("unknown helper {m}"),
    }
    println!("done");
}

/// A cgroup made for a test, removed on drop (after its processes are gone).
struct Cgroup(PathBuf);

impl Cgroup {
    /// `<cgroup2 mount>/<slice>/<name>`.
    fn new(slice: &str, name: &str) -> Self {
        let root = cgroup::find_mount().expect("a cgroup v2 mount in /proc/self/mountinfo");
        let p = root.join(slice).join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }

    /// The path relative to the hierarchy (what rstmon reports).
    fn rel(&self) -> String {
        let root = cgroup::find_mount().expect("cgroup2");
        format!(
            "/{}",
            self.0.strip_prefix(&root).expect("under root").display()
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
        if let Some(parent) = self.0.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Runs this binary's [`helper`] in `mode`, moved into `cg` before exec.
fn spawn_helper(mode: &str, cg: &Cgroup, ns: &Ns, addr: SocketAddr) -> Child {
    let procs = std::ffi::CString::new(cg.0.join("cgroup.procs").to_string_lossy().as_bytes())
        .expect("path");
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "helper",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RSTMON_HELPER", mode)
    .env("RSTMON_NETNS", format!("/var/run/netns/{}", ns.name))
    .env("RSTMON_ADDR", addr.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    // SAFETY: between fork and exec only open/write/close (async-signal-safe): the
    // child writes "0" (itself) into the cgroup's cgroup.procs.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().expect("spawn helper")
}

fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what} helper exited with {status}");
}

/// This test process's own workload, as rstmon names it.
fn own_workload() -> String {
    let text = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    workload::from_cgroup(v2_path(&text).expect("a cgroup v2 line"), |_| None)
}

/// Growth of a workload series between two scrapes (absent counts as 0: a workload's
/// series appear with its first reset).
fn delta(after: &Metrics, before: &Metrics, side: &str, cause: &str, w: &str) -> i64 {
    let l = [("side", side), ("cause", cause), ("workload", w)];
    let v = |m: &Metrics| m.get(WORKLOADS, &l).unwrap_or(0.0) as i64;
    v(after) - v(before)
}

fn ip_of(pair: &Pair, v6: bool, b: bool) -> IpAddr {
    match (v6, b) {
        (false, false) => pair.a4.into(),
        (false, true) => pair.b4.into(),
        (true, false) => pair.a6.into(),
        (true, true) => pair.b6.into(),
    }
}

fn at(v: &Value, ends: (SocketAddr, SocketAddr)) -> bool {
    let sa = v["src"].as_str().and_then(|a| a.parse().ok());
    let port = v["sport"].as_u64().and_then(|p| u16::try_from(p).ok());
    let da = v["dst"].as_str().and_then(|a| a.parse().ok());
    let dport = v["dport"].as_u64().and_then(|p| u16::try_from(p).ok());
    matches!((sa, port, da, dport), (Some(a), Some(p), Some(d), Some(dp))
        if SocketAddr::new(a, p) == ends.0 && SocketAddr::new(d, dp) == ends.1)
}

const WAIT: Duration = Duration::from_secs(10);
const LISTEN: &str = "127.0.0.1:9745";

/// `ip netns exec` gives the command a mount namespace of its own with a fresh /sys
/// (the namespace's), where the host's cgroup v2 mount is gone; a host daemon sees it.
/// Mounting cgroup2 there again (in that private mount namespace only) gives rstmon the
/// host's view back.
const REMOUNT_CGROUP: [&str; 2] = [
    "-c",
    "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" \"$@\"",
];

fn daemon<'a>(ns: &'a Ns, iface: &str, extra: &[&str]) -> Daemon<'a> {
    daemon_env(ns, iface, extra, &[])
}

fn daemon_env<'a>(ns: &'a Ns, iface: &str, extra: &[&str], envs: &[(&str, &str)]) -> Daemon<'a> {
    let mut r = rstmon().wrapper("sh", REMOUNT_CGROUP);
    for (k, v) in envs {
        r = r.env(k, v);
    }
    r.ifaces(&[iface])
        .listen(LISTEN.parse().expect("address"))
        .args(extra.iter().copied())
        .start(ns)
}

fn watch(ns: &Ns, iface: &str) -> WatchJson {
    WatchJson::start_with(ns, iface, &REMOUNT_CGROUP, &[])
}

// --- S3 in a service cgroup -------------------------------------------------------------

fn s3_in_a_service(v6: bool) {
    let pair = Pair::new().expect("namespaces");
    let tag = std::process::id();
    let cg = Cgroup::new(
        &format!("rstmon-test-{tag}.slice"),
        &format!("s3srv-{tag}.service"),
    );
    let unit = format!("s3srv-{tag}.service");
    let daemon = daemon(&pair.a, &pair.a_if, &[]);
    let watch = watch(&pair.b, &pair.b_if);
    let before = daemon.scrape();

    let server_ip = ip_of(&pair, v6, true);
    let mut child = spawn_helper("s3-server", &cg, &pair.b, SocketAddr::new(server_ip, 0));
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let port: u16 = loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).expect("helper output") > 0,
            "helper ended"
        );
        // libtest prints `test helper ... ` before the helper's own output.
        if let Some((_, p)) = l.trim().split_once("rstmon-port=") {
            break p.parse().expect("port");
        }
    };
    let server = SocketAddr::new(server_ip, port);
    let client_ip = ip_of(&pair, v6, false);
    let client = pair
        .a
        .run(|| -> io::Result<SocketAddr> {
            let mut s = TcpStream::connect(server)?;
            let local = s.local_addr()?;
            s.write_all(&[0x5a; 5000])?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(local),
                other => Err(io::Error::other(format!("want a reset, got {other:?}"))),
            }
        })
        .expect("netns")
        .expect("client");
    assert_eq!(client.ip(), client_ip);
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    wait_ok(child, "s3-server");

    let sent = watch
        .find(WAIT, |v| {
            v["direction"] == "sent" && at(v, (server, client))
        })
        .expect("a sent sample of the S3 flow on watch --json");
    println!("{sent}");
    assert_eq!(sent["cause"], "unread_data_close");
    assert_eq!(sent["workload"], unit.as_str(), "{sent}");
    assert_eq!(sent["cgroup"], cg.rel().as_str());
    assert_eq!(sent["pid"], pid, "the closing process: {sent}");
    assert_eq!(sent["comm"], "s3-server");
    assert_eq!(sent["pid_source"], "reset");
    assert_eq!(sent["uid"], 0);
    let conn = &sent["conn"];
    assert_eq!(conn["unread_bytes"], 904, "{sent}");
    assert_eq!(conn["bytes_received"], 5000, "{sent}");
    assert_eq!(conn["unsent_bytes"], 0);
    assert!(
        conn["age_s"].as_f64().is_some_and(|a| a > 0.2 && a < 10.0),
        "{sent}"
    );
    assert!(sent["netns"].as_u64().is_some_and(|n| n > 0));

    // The client's received peer_abort carries the client's own workload and its
    // connect() caller (this process): the tracepoints are host-wide, so the same
    // watch sees it.
    let rcv = watch
        .find(WAIT, |v| {
            v["direction"] == "received" && at(v, (client, server))
        })
        .expect("a received sample of the S3 flow");
    println!("{rcv}");
    assert_eq!(rcv["cause"], "peer_abort");
    assert_eq!(rcv["workload"], own_workload().as_str(), "{rcv}");
    assert_eq!(rcv["pid"], std::process::id(), "{rcv}");
    assert_eq!(rcv["pid_source"], "connect");
    // The kernel counts the SYN's sequence number too (as `ss -i` shows).
    assert_eq!(rcv["conn"]["bytes_acked"], 5001, "{rcv}");
    assert_eq!(rcv["conn"]["unsent_bytes"], 0);
    let m1 = daemon.scrape();
    let d = |m: &Metrics, side: &str, cause: &str, w: &str| delta(m, &before, side, cause, w);
    assert_eq!(
        d(&m1, "sent", "unread_data_close", &unit),
        1,
        "sent by {unit}"
    );
    let own = own_workload();
    assert!(
        d(&m1, "received", "peer_abort", &own) >= 1,
        "received peer_abort of {own}"
    );
    daemon.stop();
}

#[test]
fn s3_in_a_service_cgroup_ipv4() {
    s3_in_a_service(false);
}

#[test]
fn s3_in_a_service_cgroup_ipv6() {
    s3_in_a_service(true);
}

// --- a listener's child: its listen() caller -------------------------------------------

/// The port a helper printed (libtest prints `test helper ... ` before it).
fn helper_port(child: &mut Child) -> (u16, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).expect("helper output") > 0,
            "helper ended"
        );
        if let Some((_, p)) = l.trim().split_once("rstmon-port=") {
            return (p.parse().expect("port"), out);
        }
    }
}

#[test]
fn accepted_socket_names_its_listen_caller() {
    let pair = Pair::new().expect("namespaces");
    let tag = std::process::id();
    let cg = Cgroup::new(
        &format!("rstmon-test-{tag}.slice"),
        &format!("holder-{tag}.service"),
    );
    let watch = watch(&pair.b, &pair.b_if);
    let mut child = spawn_helper("hold", &cg, &pair.b, SocketAddr::new(pair.b4.into(), 0));
    let pid = child.id();
    let (port, mut out) = helper_port(&mut child);
    let server = SocketAddr::new(pair.b4.into(), port);
    let client = pair
        .a
        .run(|| -> io::Result<SocketAddr> {
            let mut s = TcpStream::connect(server)?;
            s.write_all(b"hello")?;
            std::thread::sleep(Duration::from_millis(100));
            let local = s.local_addr()?;
            set_linger0(&s)?;
            drop(s); // zero-linger abort: the server's accepted socket gets the RST
            Ok(local)
        })
        .expect("netns")
        .expect("client");
    let _ = out.read_to_string(&mut String::new());
    wait_ok(child, "hold");
    let rcv = watch
        .find(WAIT, |v| {
            v["direction"] == "received" && at(v, (server, client))
        })
        .expect("the server's received sample");
    println!("{rcv}");
    assert_eq!(rcv["cause"], "peer_abort");
    // Accepted from the helper's listener: the task that called listen().
    assert_eq!(rcv["pid_source"], "listen", "{rcv}");
    assert_eq!(rcv["pid"], pid);
    assert_eq!(rcv["comm"], "hold");
    assert_eq!(rcv["workload"], format!("holder-{tag}.service").as_str());
    assert_eq!(rcv["conn"]["bytes_received"], 5);
}

// --- S1 into a named namespace ----------------------------------------------------------

#[test]
fn s1_into_a_named_namespace_is_that_namespace() {
    let pair = Pair::new().expect("namespaces");
    let daemon = daemon(&pair.a, &pair.a_if, &[]);
    let watch = watch(&pair.b, &pair.b_if);
    let before = daemon.scrape();
    let s1 = SCENARIOS.iter().find(|s| s.id == "S1").expect("S1");
    let flows = [
        s1.run(&pair, false).expect("S1 ipv4"),
        s1.run(&pair, true).expect("S1 ipv6"),
    ];
    let want = format!("netns:{}", pair.b.name);
    for f in flows {
        let sent = watch
            .find(WAIT, |v| {
                v["direction"] == "sent" && at(v, (f.sender, f.receiver))
            })
            .expect("a sent sample of S1");
        assert_eq!(sent["cause"], "no_listener");
        assert_eq!(sent["workload"], want.as_str(), "{sent}");
        assert_eq!(sent["cgroup"], Value::Null);
        assert_eq!(sent["pid"], Value::Null);
        assert_eq!(sent["comm"], Value::Null);
        assert_eq!(sent["uid"], Value::Null);
        assert_eq!(sent["conn"], Value::Null);
        let rcv = watch
            .find(WAIT, |v| {
                v["direction"] == "received" && at(v, (f.receiver, f.sender))
            })
            .expect("a received sample of S1");
        assert_eq!(rcv["cause"], "refused");
        assert_eq!(rcv["workload"], own_workload().as_str());
        // A refused connect never synchronized: no connection context.
        assert_eq!(rcv["conn"], Value::Null);
    }
    let after = daemon.scrape();
    assert_eq!(delta(&after, &before, "sent", "no_listener", &want), 2);
    daemon.stop();
}

// --- idle, then zero-linger abort --------------------------------------------------------

/// `ss -tinH` of one socket in `ns`: (bytes_acked, bytes_received, segs_out, segs_in).
fn ss_counters(ns: &Ns, local: SocketAddr) -> (u64, u64, u64, u64) {
    let out = ns
        .output(
            "ss",
            &["-tinH", "state", "established", "src", &local.to_string()],
        )
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        field("bytes_acked:"),
        field("bytes_received:"),
        field("segs_out:"),
        field("segs_in:"),
    )
}

/// `envs` for both rstmon processes: `RSTMON_TEST_NO_SKB_WINDOW` makes the programs read
/// every `sk_buff` and `tcp_sock` field on its own (the path of a kernel whose fields
/// lie too far apart for one read).
fn idle_then_abort(v6: bool, envs: &[(&str, &str)]) {
    let pair = Pair::new().expect("namespaces");
    let daemon = daemon_env(&pair.a, &pair.a_if, &[], envs);
    let watch = WatchJson::start_with(&pair.b, &pair.b_if, &REMOUNT_CGROUP, envs);
    let before = daemon.scrape();
    let b = ip_of(&pair, v6, true);
    let listener = pair
        .b
        .run(|| TcpListener::bind(SocketAddr::new(b, 0)))
        .expect("netns")
        .expect("bind");
    let server = listener.local_addr().expect("addr");
    let mut client = pair
        .a
        .run(|| TcpStream::connect(server))
        .expect("netns")
        .expect("connect");
    let (mut accepted, peer) = listener.accept().expect("accept");
    client.write_all(&[1; 1000]).expect("write");
    accepted.read_exact(&mut [0u8; 1000]).expect("read");
    accepted.write_all(&[2; 300]).expect("write");
    client.read_exact(&mut [0u8; 300]).expect("read");
    std::thread::sleep(Duration::from_millis(200)); // the last ACKs
    let ss = ss_counters(&pair.b, server);
    std::thread::sleep(Duration::from_millis(1800)); // 2 s idle in all
    set_linger0(&accepted).expect("linger");
    drop(accepted);
    let sent = watch
        .find(WAIT, |v| v["direction"] == "sent" && at(v, (server, peer)))
        .expect("a sent sample of the abort");
    println!("{sent}");
    assert_eq!(sent["cause"], "linger_abort");
    assert_eq!(sent["pid"], std::process::id(), "made in close(): {sent}");
    assert_eq!(sent["pid_source"], "reset");
    let c = &sent["conn"];
    let idle = c["idle_rx_s"].as_f64().expect("idle_rx_s");
    assert!((idle - 2.0).abs() <= 0.3, "idle_rx_s {idle}: {sent}");
    let idle_tx = c["idle_tx_s"].as_f64().expect("idle_tx_s");
    assert!((idle_tx - 2.0).abs() <= 0.3, "idle_tx_s {idle_tx}: {sent}");
    assert_eq!(c["bytes_received"], 1000);
    assert_eq!(c["bytes_acked"], 300);
    assert_eq!(
        (c["bytes_acked"].as_u64(), c["bytes_received"].as_u64()),
        (Some(ss.0), Some(ss.1))
    );
    // The kernel fires tcp_send_reset after it transmitted an active reset: segs_out
    // includes the RST itself.
    assert_eq!(
        c["segs_out"].as_u64(),
        Some(ss.2 + 1),
        "segs_out against ss: {sent}"
    );
    assert_eq!(
        c["segs_in"].as_u64(),
        Some(ss.3),
        "segs_in against ss: {sent}"
    );
    assert_eq!(c["unread_bytes"], 0);
    assert_eq!(c["unsent_bytes"], 0);
    assert!(
        c["age_s"]
            .as_f64()
            .is_some_and(|a| (2.0..10.0).contains(&a)),
        "{sent}"
    );
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    let after = daemon.scrape();
    let bucket = |le: &str| after.delta(&before, IDLE, &[("side", "sent"), ("le", le)]);
    assert_eq!(bucket("1"), 0, "idle histogram le=1");
    assert_eq!(bucket("5"), 1, "idle histogram le=5");
    assert_eq!(bucket("+Inf"), 1, "idle histogram le=+Inf");
    daemon.stop();
}

#[test]
fn idle_then_zero_linger_abort_ipv4() {
    idle_then_abort(false, &[]);
}

#[test]
fn idle_then_zero_linger_abort_ipv6() {
    idle_then_abort(true, &[]);
}

#[test]
fn idle_then_zero_linger_abort_fields_read_one_by_one() {
    idle_then_abort(false, &[("RSTMON_TEST_NO_SKB_WINDOW", "1")]);
}

// --- --max-workloads --------------------------------------------------------------------

#[test]
fn max_workloads_folds_the_rest_into_other() {
    let pair = Pair::new().expect("namespaces");
    let daemon = daemon(&pair.a, &pair.a_if, &["--max-workloads", "2"]);
    let tag = std::process::id();
    let closed = pair
        .b
        .run(|| TcpListener::bind(SocketAddr::new(pair.b4.into(), 0)).and_then(|l| l.local_addr()))
        .expect("netns")
        .expect("port");
    let refused = |i: u32| {
        let cg = Cgroup::new(
            &format!("rstmon-mw-{tag}.slice"),
            &format!("w{i}-{tag}.service"),
        );
        wait_ok(spawn_helper("refused", &cg, &pair.a, closed), "refused");
        cg
    };
    // First: netns:<b> (the no_listener side) and w1: the two that keep their names.
    let c1 = refused(1);
    let first = daemon.scrape();
    let nsb = format!("netns:{}", pair.b.name);
    let w1 = format!("w1-{tag}.service");
    let v = |m: &Metrics, side: &str, cause: &str, w: &str| {
        m.get(
            WORKLOADS,
            &[("side", side), ("cause", cause), ("workload", w)],
        )
    };
    assert_eq!(
        v(&first, "received", "refused", &w1),
        Some(1.0),
        "w1 admitted"
    );
    assert_eq!(
        v(&first, "sent", "no_listener", &nsb),
        Some(1.0),
        "netns admitted"
    );
    // Three more workloads: w2, w3, w4 fold into other.
    let rest: Vec<Cgroup> = (2..=4).map(refused).collect();
    let after = daemon.scrape();
    assert_eq!(v(&after, "received", "refused", "other"), Some(3.0));
    assert_eq!(v(&after, "sent", "no_listener", &nsb), Some(4.0));
    assert_eq!(after.get("rstmon_workload_overflow_total", &[]), Some(3.0));
    for i in 2..=4 {
        let w = format!("w{i}-{tag}.service");
        assert!(
            after.matching(WORKLOADS, &[("workload", &w)]).is_empty(),
            "{w} has no series of its own"
        );
    }
    daemon.stop();
    drop((c1, rest));
}
