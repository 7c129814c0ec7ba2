//! `rstmon selftest` end to end: every row matches, and an interrupted run removes the
//! namespaces it made. Needs root (CI runs as root).

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const RSTMON: &str = env!("CARGO_BIN_EXE_rstmon");

fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}-", rst_user::netns::PREFIX);
    std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[test]
fn selftest_matches_every_row() {
    let child = Command::new(RSTMON)
        .arg("selftest")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rstmon selftest");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "selftest failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('S') && l.len() > 3)
        .collect();
    assert_eq!(
        rows.len(),
        28,
        "7 situations x 2 families x 2 sides:\n{stdout}"
    );
    // id fam side expected observed verdict workload process
    let cols = |r: &str| r.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert!(rows.iter().all(|r| cols(r)[5] == "ok"), "{stdout}");
    for r in &rows {
        let c = cols(r);
        assert_eq!(c.len(), 8, "a workload and a process per row: {r}");
        match (c[0].as_str(), c[2].as_str()) {
            // No socket: the namespace the SYN arrived in, no process.
            ("S1" | "S5" | "S6", "sender") => {
                assert!(c[6].starts_with(&format!("netns:rstmon-{pid}-")), "{r}");
                assert_eq!(c[7], "pid=-", "{r}");
            }
            // close() in the selftest itself.
            ("S2" | "S3" | "S7", "sender") => {
                assert!(c[7].starts_with(&format!("pid={pid}/")), "{r}")
            }
            // The client's connect() caller: the selftest.
            (_, "receiver") => assert!(c[7].starts_with(&format!("pid={pid}/")), "{r}"),
            _ => {}
        }
    }
    assert!(stdout.contains("28 rows: 28 ok, 0 mismatched"), "{stdout}");
}

#[test]
fn interrupted_selftest_cleans_up() {
    let mut child = Command::new(RSTMON)
        .arg("selftest")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rstmon selftest");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // Wait for the first result row: namespaces exist from then on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .next()
            .expect("selftest ended before printing a row")
            .expect("read stdout");
        if line.starts_with("S1 ") {
            break;
        }
        assert!(Instant::now() < deadline, "no row within 60 s");
    }
    // SAFETY: signalling the child we spawned, by its PID.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let status = child.wait().expect("wait for selftest");
    assert_eq!(status.code(), Some(130), "interrupted selftest exits 130");
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind"
    );
}
