//! `rstmon reconcile` while S1–S7 run over IPv4 and IPv6: every line `agree`, exit 0,
//! in the client's namespace (where the suite's resets arrive) and in the host
//! namespace (which the suite leaves alone: both sides count nothing there). Needs
//! root; run with --test-threads=1.

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::BIN;
use rst_user::{
    cli::reconcile::COUNTERS,
    netns::{Ns, Pair},
    selftest::SCENARIOS,
};

struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let pipe = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `rstmon reconcile` (in `ns`, or in the host namespace) and waits until it
/// counts.
fn start(ns: Option<&Ns>, args: &[&str]) -> Guard {
    let mut cmd = match ns {
        Some(ns) => ns.command(BIN),
        None => std::process::Command::new(BIN),
    };
    let mut child = cmd
        .arg("reconcile")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rstmon reconcile");
    let err = stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match err.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("counting") => break,
            Ok(l) => eprintln!("reconcile: {l}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("rstmon reconcile ended before it counted: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "reconcile not counting within 60 s"
        );
    }
    Guard(Some(child))
}

/// Ends the window (SIGINT), returns the exit status and the lines by counter.
fn finish(mut g: Guard, what: &str) -> BTreeMap<String, (i64, i64, String)> {
    let child = g.0.take().expect("child");
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait for reconcile");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{what}:\n{text}");
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n{text}",
        out.status
    );
    let mut lines = BTreeMap::new();
    for l in text.lines().skip(2) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 4, "{what}: line {l:?}");
        let n = |s: &str| s.parse::<i64>().unwrap_or_else(|e| panic!("{l}: {e}"));
        lines.insert(f[0].to_string(), (n(f[1]), n(f[2]), f[3..].join(" ")));
    }
    let names: Vec<&str> = lines.keys().map(String::as_str).collect();
    let mut want = COUNTERS.to_vec();
    want.sort();
    assert_eq!(names, want, "{what}: one line per counter");
    lines
}

#[test]
fn reconcile_agrees_while_s1_to_s7_run() {
    let pair = Pair::new().expect("namespaces and veth pair");
    let client = start(Some(&pair.a), &["--seconds", "600", "-i", &pair.a_if]);
    // In the host namespace no interface is taken: nothing of the host is touched.
    let host = start(None, &["--seconds", "600", "-i", "rstmon-none-*"]);
    for v6 in [false, true] {
        for sc in SCENARIOS {
            sc.run(&pair, v6)
                .unwrap_or_else(|e| panic!("{} over v6={v6}: {e}", sc.id));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines = finish(client, "client namespace");
    for (counter, (k, r, verdict)) in &lines {
        assert_eq!(verdict, "agree", "client namespace: {counter} {k} vs {r}");
    }
    // What the suite does to the client: 2 × (S1 refused; S2–S7 reset in ESTABLISHED
    // or CLOSE_WAIT).
    assert_eq!(lines["TcpAttemptFails"].0, 2);
    assert_eq!(lines["TcpEstabResets"].0, 12);
    let lines = finish(host, "host namespace");
    for (counter, (k, r, verdict)) in &lines {
        assert_eq!(verdict, "agree", "host namespace: {counter} {k} vs {r}");
    }
}
