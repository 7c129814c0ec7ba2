//! What the privileged integration tests share: [`rst_testkit`], with the binary under
//! test filled in (only this crate knows where cargo built it).

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different subset"
)]

use std::{
    io,
    net::{SocketAddr, TcpStream},
    process::Command,
};

pub use rst_testkit::{
    Daemon, EXIT_TIMEOUT, IO_TIMEOUT, Metrics, Response, Rstmon, START_TIMEOUT, Series, http_get,
    promtool, run_to_exit, xdp_attachment,
};
use rst_user::netns::Ns;

pub mod systemd;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rstmon");

/// `rstmon run` of the binary under test, to configure further ([`Rstmon`]).
pub fn rstmon() -> Rstmon {
    Rstmon::new(BIN)
}

/// `rstmon run -i IFACE... --web.listen-address ADDR` inside `ns`, as a command.
pub fn run_command(ns: &Ns, ifaces: &[&str], listen: SocketAddr) -> Command {
    rstmon().ifaces(ifaces).listen(listen).command(ns)
}

/// `n` connects from inside `ns` to `to`; every one must be refused (an RST answers the
/// SYN).
pub fn connect_refused(ns: &Ns, to: SocketAddr, n: i64) {
    let result = ns
        .run(|| {
            for i in 0..n {
                match TcpStream::connect_timeout(&to, IO_TIMEOUT) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    other => {
                        return Err(format!(
                            "connect #{i} to {to}: {other:?}; want connection refused"
                        ));
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("entering namespace {}: {e}", ns.name));
    if let Err(e) = result {
        panic!("in {}: {e}", ns.name);
    }
}

/// Asserts that series `name{labels}` grew by exactly `want` between two scrapes.
pub fn assert_delta(
    after: &Metrics,
    before: &Metrics,
    name: &str,
    labels: &[(&str, &str)],
    want: i64,
    ctx: &str,
) {
    let got = after.delta(before, name, labels);
    let series = Series::new(name, labels);
    println!("{ctx}: {series} +{got}");
    assert_eq!(got, want, "{ctx}: {series} grew by {got}, want {want}");
}

/// The sum over every series named `name` having (at least) `labels` of its growth
/// between two scrapes (a series new in `after` counts from 0).
pub fn sum_delta(after: &Metrics, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> i64 {
    after
        .matching(name, labels)
        .into_iter()
        .map(|(s, v)| {
            let l: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            v as i64 - before.get(name, &l).unwrap_or(0.0) as i64
        })
        .sum()
}

/// `rstmon watch --json -i IFACE` inside a namespace, its JSON lines on a channel;
/// killed (by its PID) on drop.
pub struct WatchJson {
    child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<serde_json::Value>,
    /// Lines read and not yet returned by [`WatchJson::find`].
    seen: std::cell::RefCell<Vec<serde_json::Value>>,
}

impl WatchJson {
    /// Starts it and waits until it says it is watching (60 s at most).
    pub fn start(ns: &Ns, iface: &str) -> Self {
        Self::start_with(ns, iface, &[], &[])
    }

    /// [`WatchJson::start`] through `sh WRAPPER_ARGS... BIN watch ...` when
    /// `wrapper_args` is not empty (the wrapper must exec its `$0`), with `envs` set.
    pub fn start_with(ns: &Ns, iface: &str, wrapper_args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::{
            io::{BufRead as _, BufReader},
            process::Stdio,
            sync::mpsc,
            time::{Duration, Instant},
        };
        let mut cmd = if wrapper_args.is_empty() {
            ns.command(BIN)
        } else {
            let mut c = ns.command("sh");
            c.args(wrapper_args).arg(BIN);
            c
        };
        let mut child = cmd
            .envs(envs.iter().copied())
            .args(["watch", "--standalone", "--json", "-i", iface])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rstmon watch");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&l)
                    .unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let (etx, erx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("watch: {l}");
                let _ = etx.send(l);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match erx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("watching resets") => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("rstmon watch ended before it was ready: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "rstmon watch not ready within 60 s"
            );
        }
        Self {
            child,
            lines,
            seen: Default::default(),
        }
    }

    /// The first sample that `pick` accepts (among those already read, then those to
    /// come), within `timeout`.
    pub fn find(
        &self,
        timeout: std::time::Duration,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let mut seen = self.seen.borrow_mut();
        if let Some(i) = seen.iter().position(&pick) {
            return Some(seen.remove(i));
        }
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) if pick(&v) => return Some(v),
                Ok(v) => seen.push(v),
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for WatchJson {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
