//! `rstmon watch --json` standalone (no daemon runs): one parseable JSON object per
//! sampled reset, with the fields the issue names; its filters narrow them. Needs root.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use rst_testkit::Watcher;
use rst_user::{netns::Pair, selftest::SCENARIOS};
use serde_json::Value;

const RSTMON: &str = env!("CARGO_BIN_EXE_rstmon");
/// No daemon serves here: `watch` runs standalone.
const NO_DAEMON: &str = "/nonexistent-rstmon/watch.sock";

/// Kills the child on drop (also on panic), by its PID.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn watch_json_lines_parse_and_carry_the_cause() {
    watch_json(false);
}

/// The same samples where the send handler reads each `sk_buff` field on its own (a
/// kernel whose fields lie too far apart for one window; forced here).
#[test]
fn watch_json_lines_are_the_same_without_the_skb_window() {
    watch_json(true);
}

fn watch_json(no_skb_window: bool) {
    let pair = Pair::new().expect("namespaces");
    let mut cmd = pair.a.command(RSTMON);
    if no_skb_window {
        cmd.env("RSTMON_TEST_NO_SKB_WINDOW", "1");
    }
    let mut child = cmd
        .args(["watch", "--json", "-i", &pair.a_if])
        .args(["--daemon-socket", NO_DAEMON])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rstmon watch");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let mut guard = Guard(child);

    // Ready once it says it is watching, after saying it runs standalone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut standalone = false;
    loop {
        match err.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.contains("watching resets") => break,
            Ok(l) if l.contains(&format!("no daemon at {NO_DAEMON}: standalone")) => {
                standalone = true;
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("rstmon watch ended before it was ready: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "rstmon watch not ready within 60 s"
        );
    }

    assert!(standalone, "watch did not say it runs standalone");
    // A second standalone watch, filtered: only received resets in the IPv6 network.
    let mut filtered_cmd = pair.b.command(RSTMON);
    filtered_cmd
        .args([
            "watch",
            "--json",
            "-i",
            &pair.b_if,
            "--daemon-socket",
            NO_DAEMON,
        ])
        .args(["--cause", "refused", "--addr", "fd00:5253::/32"]);
    let filtered = Watcher::start(filtered_cmd, Duration::from_secs(60));

    // S1 once per family: the client (in a) connects to a closed port (in b).
    let s1 = SCENARIOS.iter().find(|s| s.id == "S1").expect("S1");
    let flows = [
        s1.run(&pair, false).expect("S1 over IPv4"),
        s1.run(&pair, true).expect("S1 over IPv6"),
    ];

    // Tracepoints are host-wide: keep only the samples of these two flows.
    let ours = |v: &Value| {
        flows.iter().any(|f| {
            let ends = [f.sender, f.receiver];
            let src = v["src"].as_str().and_then(|a| a.parse().ok());
            let port = v["sport"].as_u64().and_then(|p| u16::try_from(p).ok());
            match (src, port) {
                (Some(ip), Some(port)) => ends.contains(&std::net::SocketAddr::new(ip, port)),
                _ => false,
            }
        })
    };
    let mut samples: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.len() < 6 && Instant::now() < deadline {
        if let Ok(line) = out.recv_timeout(Duration::from_millis(100)) {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line: {line:?}: {e}"));
            if ours(&v) {
                samples.push(v);
            }
        }
    }
    assert_eq!(samples.len(), 6, "3 samples per flow: {samples:#?}");
    for flow in &flows {
        let fam = if flow.sender.is_ipv6() {
            "ipv6"
        } else {
            "ipv4"
        };
        let find = |dir: &str| {
            samples
                .iter()
                .find(|s| s["direction"] == dir && s["family"] == fam)
                .unwrap_or_else(|| panic!("no {dir} {fam} sample in {samples:#?}"))
        };
        let sent = find("sent");
        assert_eq!(sent["cause"], "no_listener");
        assert_eq!(sent["reason"], "NO_SOCKET");
        assert_eq!(sent["trigger_flags"], "SYN");
        assert_eq!(sent["rst_flags"], "RST|ACK");
        assert_eq!(sent["src"], flow.sender.ip().to_string());
        assert_eq!(sent["sport"], flow.sender.port());
        assert_eq!(sent["dst"], flow.receiver.ip().to_string());
        assert_eq!(sent["dport"], flow.receiver.port());

        let received = find("received");
        assert_eq!(received["cause"], "refused");
        assert_eq!(received["state"], "SYN_SENT");
        assert_eq!(received["src"], flow.receiver.ip().to_string());
        assert_eq!(received["sport"], flow.receiver.port());

        let wire = find("wire");
        assert_eq!(wire["interface"], pair.a_if.as_str());
        assert_eq!(wire["rst_flags"], "RST|ACK");
        assert_eq!(wire["src"], flow.sender.ip().to_string());
        assert_eq!(wire["dport"], flow.receiver.port());
        assert_eq!(wire["window"], 0);
        assert_eq!(wire["seq"], 0);
        // Joined in the kernel: the connecting socket took it; nothing suspect.
        assert_eq!(wire["verdict"], "accepted");
        assert_eq!(wire["suspect"], serde_json::json!([]));
        assert_eq!(received["verdict"], "accepted");
        assert_eq!(received["suspect"], serde_json::json!([]));
        assert_eq!(received["wire"]["seq"], 0);
        assert_eq!(received["wire"]["interface"], pair.a_if.as_str());
        assert_eq!(wire["wire_direction"], "ingress");
        assert_eq!(wire["cause"], Value::Null, "a wire sample has no cause");
        for s in [sent, received, wire] {
            let t = s["time"].as_str().expect("time is a string");
            assert!(
                t.len() == 27 && t.ends_with('Z') && t.starts_with("20"),
                "time {t}"
            );
        }
    }

    // The filtered watcher: exactly the IPv6 flow's received reset.
    let v6 = flows
        .iter()
        .find(|f| f.sender.is_ipv6())
        .expect("IPv6 flow");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got: Vec<Value> = filtered
            .lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
            .collect();
        if !got.is_empty() || Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(500));
            break filtered
                .lines()
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
                .collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for v in &got {
        assert_eq!(v["cause"], "refused", "{v}");
        assert_eq!(v["family"], "ipv6", "{v}");
    }
    let mine: Vec<&Value> = got
        .iter()
        .filter(|v| v["dst"] == v6.sender.ip().to_string() && v["dport"] == v6.sender.port())
        .collect();
    assert_eq!(mine.len(), 1, "the filtered watcher: {got:#?}");
    let (status, err) = filtered.stop();
    assert!(
        status.success(),
        "filtered watch exited with {status}: {err}"
    );

    // SIGTERM: detach and exit 0.
    // SAFETY: signalling our own child by its PID.
    assert_eq!(unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) }, 0);
    let status = guard.0.wait().expect("wait");
    assert!(status.success(), "watch exited with {status}");
}
