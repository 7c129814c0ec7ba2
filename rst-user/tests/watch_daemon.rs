//! `rstmon watch` beside a running `rstmon run`: it reads the daemon's sample stream
//! (nothing attached), sees exactly the resets the test makes, each filter narrows them,
//! several watchers get everything at once, a stalled watcher is told its drops while
//! the daemon counts on exactly, and only root and the daemon's user may use the socket.
//!
//! Privileged: needs root (BPF, XDP, network namespaces, setpriv). The tracepoints are
//! host-wide: samples are told apart by this test's addresses, and the file runs with
//! `--test-threads=1`.

mod common;

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use common::{BIN, Daemon, assert_delta, connect_refused, rstmon, run_to_exit, xdp_attachment};
use rst_testkit::Watcher;
use rst_user::netns::Pair;
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WIRE: &str = "rstmon_wire_resets_total";

fn pair() -> Pair {
    Pair::new().unwrap_or_else(|e| panic!("creating namespaces and veth: {e}"))
}

/// A directory for the daemon's socket, not created (the daemon creates it) and removed
/// on drop.
struct SockDir(PathBuf);

impl SockDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rstmon-watch-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("watch.sock")
    }
}

impl Drop for SockDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `rstmon run -i A` in namespace A, serving the stream at `sock`.
fn daemon<'a>(p: &'a Pair, sock: &Path) -> Daemon<'a> {
    rstmon().iface(&p.a_if).watch_socket(sock).start(&p.a)
}

fn watch_command(sock: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("watch")
        .arg("--daemon-socket")
        .arg(sock)
        .args(args)
        .env("RSTMON_LOG", "info");
    cmd
}

/// A watcher of the daemon at `sock`; it must say it reads from the daemon.
fn watcher(sock: &Path, args: &[&str]) -> Watcher {
    let w = Watcher::start(watch_command(sock, args), READY_TIMEOUT);
    let err = w.stderr();
    assert!(
        err.contains(&format!(
            "reading samples from the daemon at {}",
            sock.display()
        )),
        "watch {args:?} did not say it reads from the daemon:\n{err}"
    );
    w
}

/// The sample objects (control lines left out) a JSON watcher printed.
fn samples(w: &Watcher) -> Vec<Value> {
    w.lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))
        })
        .filter(|v| v.get("direction").is_some())
        .collect()
}

/// The `{"dropped":N}` notices a JSON watcher printed, summed.
fn dropped_lines(w: &Watcher) -> u64 {
    w.lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("dropped").and_then(Value::as_u64))
        .sum()
}

/// The drops a watcher told on stderr, summed.
fn dropped_told(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" samples dropped by the daemon for this watcher")?;
            head.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Whether a sample is one of this test's: both ends are the pair's addresses (the
/// tracepoints see every namespace of the host); wire samples only as XDP saw them on
/// ingress.
fn ours(p: &Pair, v: &Value) -> bool {
    let mine: [IpAddr; 4] = [p.a4.into(), p.b4.into(), p.a6.into(), p.b6.into()];
    let is_mine = |k: &str| {
        v[k].as_str()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|a| mine.contains(&a))
    };
    let ingress = v.get("wire_direction").is_none_or(|d| d == "ingress");
    is_mine("src") && is_mine("dst") && (v["direction"] != "wire" || ingress)
}

/// Waits until `done` holds (or `timeout` passes), then a little longer so that any
/// sample too many has arrived too.
fn settle(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
}

/// One watcher of the filter test: its flags, what every sample it prints must be, and
/// how many of this test's samples it must print.
struct Case {
    args: &'static [&'static str],
    each: fn(&Value) -> bool,
    want: usize,
}

/// Resets of three flows, seen by watchers of the daemon with and without filters:
/// * X: A connects 10 times to B's closed port 9 over IPv4 (sent by B, received by A,
///   RST|ACK on A's ingress);
/// * Y: B connects 7 times to A's closed port 13 over IPv4 (sent by A, received by B;
///   nothing on A's ingress);
/// * Z: A connects 5 times to B's closed port 9 over IPv6.
#[test]
fn watchers_beside_the_daemon_see_exact_resets_and_filters_narrow_them() {
    let p = pair();
    let dir = SockDir::new();
    let sock = dir.sock();
    let d = daemon(&p, &sock);

    let cases = [
        // Two watchers without a filter both get everything: 3 × 10 + 2 × 7 + 3 × 5.
        Case {
            args: &[],
            each: |_| true,
            want: 59,
        },
        Case {
            args: &[],
            each: |_| true,
            want: 59,
        },
        Case {
            args: &["--cause", "refused"],
            each: |v| v["cause"] == "refused",
            want: 22,
        },
        Case {
            args: &["--side", "wire"],
            each: |v| v["direction"] == "wire",
            want: 15,
        },
        Case {
            args: &["--port", "13"],
            each: |v| v["sport"] == 13 || v["dport"] == 13,
            want: 14,
        },
        Case {
            args: &["--addr", "10.213.0.0/16"],
            each: |v| v["family"] == "ipv4",
            want: 44,
        },
        Case {
            args: &["--addr", "fd00:5253::/32"],
            each: |v| v["family"] == "ipv6",
            want: 15,
        },
        Case {
            args: &["--side", "sent", "--cause", "no_listener", "--port", "9"],
            each: |v| v["direction"] == "sent" && v["cause"] == "no_listener",
            want: 15,
        },
        Case {
            args: &[
                "--cause",
                "no_listener",
                "--cause",
                "refused",
                "--side",
                "sent",
                "--side",
                "received",
            ],
            each: |v| v["direction"] != "wire",
            want: 44,
        },
    ];
    let mut watchers: Vec<Watcher> = cases
        .iter()
        .map(|c| {
            let mut args = vec!["--json"];
            args.extend(c.args);
            watcher(&sock, &args)
        })
        .collect();
    // From the daemon, -i narrows its wire samples (and attaches nothing: A's XDP hook
    // is the daemon's, a standalone watch would fail on it).
    let a_if = p.a_if.clone();
    let iface_args = ["--json", "--side", "wire", "-i", a_if.as_str()];
    watchers.push(watcher(&sock, &iface_args));
    watchers.push(watcher(
        &sock,
        &["--json", "--side", "wire", "-i", "nomatch*"],
    ));
    // Text lines from the daemon read as a standalone watch's.
    let text = watcher(&sock, &["--side", "received", "--port", "13"]);

    let m = d.scrape();
    assert_eq!(m.value("rstmon_watch_clients", &[]), 12.0, "12 watchers");

    let before = d.scrape();
    connect_refused(&p.a, SocketAddr::new(p.b4.into(), 9), 10);
    connect_refused(&p.b, SocketAddr::new(p.a4.into(), 13), 7);
    connect_refused(&p.a, SocketAddr::new(p.b6.into(), 9), 5);
    let after = d.scrape();
    let cf = |cause, fam| [("cause", cause), ("family", fam)];
    assert_delta(
        &after,
        &before,
        SENT,
        &cf("no_listener", "ipv4"),
        17,
        "daemon",
    );
    assert_delta(
        &after,
        &before,
        RECEIVED,
        &cf("refused", "ipv6"),
        5,
        "daemon",
    );

    let wants: Vec<usize> = cases.iter().map(|c| c.want).chain([15, 0]).collect();
    settle(Duration::from_secs(15), || {
        watchers
            .iter()
            .zip(&wants)
            .all(|(w, &n)| samples(w).iter().filter(|v| ours(&p, v)).count() >= n)
            && text.lines().len() >= 7
    });
    for (i, (w, want)) in watchers.iter().zip(&wants).enumerate() {
        let all = samples(w);
        let mine: Vec<&Value> = all.iter().filter(|v| ours(&p, v)).collect();
        let args = cases.get(i).map_or(&[][..], |c| c.args);
        println!(
            "watcher {i} {args:?}: {} samples, {} of this test",
            all.len(),
            mine.len()
        );
        assert_eq!(mine.len(), *want, "watcher {i} {args:?}: {mine:#?}");
        if let Some(c) = cases.get(i) {
            for v in &all {
                assert!(
                    (c.each)(v),
                    "watcher {i} {args:?} printed a sample its filter excludes: {v}"
                );
            }
        } else {
            for v in &all {
                assert!(
                    v["direction"] == "wire" && v["interface"] == a_if.as_str(),
                    "watcher -i {a_if}: {v}"
                );
            }
        }
        assert_eq!(dropped_lines(w), 0, "watcher {i}: nothing may be dropped");
        for v in mine.iter().filter(|v| v["direction"] == "wire") {
            assert_eq!(
                v["cause"],
                Value::Null,
                "a wire sample's cause is null: {v}"
            );
        }
    }
    let lines = text.lines();
    assert_eq!(lines.len(), 7, "text watcher: {lines:#?}");
    for l in &lines {
        assert!(
            l.contains(" received refused ")
                && l.contains(&format!("{}:13", p.a4))
                && l.contains("state=SYN_SENT"),
            "text line {l:?}"
        );
    }

    // --standalone does not read the daemon: it tries to attach, and A's hook is taken.
    let mut cmd = p.a.command(BIN);
    cmd.args(["watch", "--standalone", "-i", &p.a_if]);
    let out = run_to_exit(cmd, "watch --standalone beside the daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "watch --standalone: {err}");
    assert!(err.contains("already has an XDP program attached"), "{err}");
    let xdp = xdp_attachment(&p.a, &p.a_if).expect("the daemon's XDP is still attached");
    assert!(xdp.contains("rstmon_xdp"), "{xdp}");

    for w in watchers.into_iter().chain([text]) {
        let (status, err) = w.stop();
        assert!(status.success(), "watch exited with {status}: {err}");
    }
    settle(Duration::from_secs(5), || {
        d.scrape().value("rstmon_watch_clients", &[]) == 0.0
    });
    assert_eq!(
        d.scrape().value("rstmon_watch_clients", &[]),
        0.0,
        "watchers gone"
    );
    d.stop();
    assert!(
        !sock.exists(),
        "the daemon removes its socket when it stops"
    );
}

/// A watcher stopped with SIGSTOP during a burst of 3 000 refused connects (9 000
/// samples): the daemon counts every reset exactly, the stopped watcher is told how many
/// samples it lost (on stderr and in its JSON), and what it got plus what it lost is
/// what a watcher that kept reading got plus what that one lost.
#[test]
fn a_stalled_watcher_is_told_its_drops_and_the_daemon_counts_on() {
    const N: i64 = 3000;
    let p = pair();
    let dir = SockDir::new();
    let sock = dir.sock();
    let d = daemon(&p, &sock);
    let slow = watcher(&sock, &["--json"]);
    let reader = watcher(&sock, &["--json"]);

    let before = d.scrape();
    slow.signal(libc::SIGSTOP);
    connect_refused(&p.a, SocketAddr::new(p.b4.into(), 9), N);
    let after = d.scrape();
    let ctx = format!("{N} refused connects, one watcher stopped");
    let cf = |cause| [("cause", cause), ("family", "ipv4")];
    assert_delta(&after, &before, SENT, &cf("no_listener"), N, &ctx);
    assert_delta(&after, &before, RECEIVED, &cf("refused"), N, &ctx);
    let wire = [
        ("interface", p.a_if.as_str()),
        ("family", "ipv4"),
        ("flags", "rst_ack"),
        ("direction", "ingress"),
    ];
    assert_delta(&after, &before, WIRE, &wire, N, &ctx);

    // The reader got this test's samples while the other was stopped, or was told of
    // each one it did not get (on a loaded 2-CPU machine even a reading watcher can fall
    // more than its queue behind a burst; that is the same accounting, not a loss).
    let accounted =
        |w: &Watcher| samples(w).iter().filter(|v| ours(&p, v)).count() as u64 + dropped_lines(w);
    settle(Duration::from_secs(20), || {
        accounted(&reader) >= 3 * N as u64
    });
    let read = samples(&reader).iter().filter(|v| ours(&p, v)).count();
    println!(
        "reading watcher: {read} of this test's samples, {} dropped",
        dropped_lines(&reader)
    );
    assert!(
        accounted(&reader) >= 3 * N as u64,
        "the reading watcher: {read} samples and {} drops for {} samples",
        dropped_lines(&reader),
        3 * N
    );

    slow.signal(libc::SIGCONT);
    // Every sample published went to each watcher or was counted as dropped for it.
    let balance = |w: &Watcher| samples(w).len() as u64 + dropped_lines(w);
    settle(Duration::from_secs(20), || {
        balance(&slow) == balance(&reader)
    });
    let (got, lost) = (samples(&slow).len() as u64, dropped_lines(&slow));
    println!(
        "stopped watcher: {got} samples, {lost} dropped; reader: {} samples, {} dropped",
        samples(&reader).len(),
        dropped_lines(&reader)
    );
    assert!(lost > 0, "the stopped watcher lost nothing? got {got}");
    assert_eq!(
        balance(&slow),
        balance(&reader),
        "samples + drops of each watcher"
    );
    let m = d.scrape();
    assert_eq!(
        m.value("rstmon_watch_dropped_total", &[]) as u64,
        lost + dropped_lines(&reader),
        "rstmon_watch_dropped_total"
    );
    let (status, err) = slow.stop();
    assert!(status.success(), "{status}: {err}");
    assert_eq!(dropped_told(&err), lost, "the drops told on stderr:\n{err}");
    let (status, _) = reader.stop();
    assert!(status.success());
    d.stop();
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// `rstmon watch` as uid 65534, to exit with an error.
fn watch_as_nobody(sock: &Path) -> (bool, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
        BIN,
    ])
    .args(["watch", "--daemon-socket"])
    .arg(sock)
    .env_remove("RSTMON_LOG");
    let out = run_to_exit(cmd, "watch as uid 65534");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The socket is 0600 in a 0700 directory, both root's; uid 65534 cannot connect, and
/// with the modes opened up the daemon still refuses it (SO_PEERCRED).
#[test]
fn only_root_and_the_daemons_user_may_watch() {
    let p = pair();
    let dir = SockDir::new();
    let sock = dir.sock();
    let mut d = daemon(&p, &sock);
    assert_eq!(mode(&dir.0), 0o700, "socket directory");
    assert_eq!(mode(&sock), 0o600, "socket");
    assert_eq!(fs::metadata(&sock).expect("socket").uid(), 0);

    let (ok, err) = watch_as_nobody(&sock);
    println!("uid 65534, modes as made: {}", err.trim_end());
    assert!(!ok, "uid 65534 watched: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("rstmon: ") && err.contains("permission denied"),
        "{err}"
    );

    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).expect("chmod dir");
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let (ok, err) = watch_as_nobody(&sock);
    println!("uid 65534, modes opened: {}", err.trim_end());
    assert!(!ok, "uid 65534 watched: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("refused: uid 65534 may not watch"), "{err}");
    d.assert_running("after refusing a watcher");
    settle(Duration::from_secs(2), || {
        d.stderr().contains("watcher refused")
    });
    assert!(d.stderr().contains("watcher refused"), "{}", d.stderr());
    // Root still may.
    let w = watcher(&sock, &[]);
    let (status, _) = w.stop();
    assert!(status.success());
    d.stop();
}

/// A bad filter is one line naming the flag (and, for a cause, the valid ones), before
/// anything is loaded or connected.
#[test]
fn bad_filters_are_one_line_errors() {
    let nowhere = Path::new("/nonexistent-rstmon/watch.sock");
    for (args, needles) in [
        (
            &["--cause", "nope"][..],
            &[
                "unknown cause `nope`",
                "no_listener",
                "refused",
                "peer_lost_state",
            ][..],
        ),
        (
            &["--side", "both"],
            &["unknown side `both`", "sent, received, wire"],
        ),
        (
            &["--addr", "10.0.0.0/33"],
            &["`10.0.0.0/33`", "--addr", "at most 32"],
        ),
        (&["--addr", "fd00::/129"], &["`fd00::/129`", "at most 128"]),
        (
            &["--addr", "example.com"],
            &["`example.com`", "not an IPv4 or IPv6 address"],
        ),
    ] {
        let out = run_to_exit(watch_command(nowhere, args), "watch with a bad filter");
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{args:?}: {}", err.trim_end());
        assert!(!out.status.success(), "{args:?} exited 0");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got:\n{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} missing from {err}");
        }
    }
}
