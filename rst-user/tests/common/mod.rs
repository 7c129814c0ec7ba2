//! Helpers shared by the privileged integration tests: run `rstmon` inside a network
//! namespace, scrape it from inside that namespace, parse the exposition, stop it.
//!
//! Every daemon is killed when its [`Daemon`] guard drops (also on panic), before the
//! namespaces it runs in are removed.

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rst_user::netns::Ns;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rstmon");

/// How long a daemon may take to load, attach and answer /metrics.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit (after a signal, or on an error path).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connect/read timeout of one HTTP request or one test connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(50);

/// Collects a pipe on a thread so the child never blocks on a full pipe.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn new(mut pipe: impl io::Read + Send + 'static) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let thread = thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Self {
            buf,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits for EOF (the child has exited) and returns everything.
    fn finish(&mut self) -> Vec<u8> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn finish_text(&mut self) -> String {
        String::from_utf8_lossy(&self.finish()).into_owned()
    }
}

/// Polls `child` until it exits or `timeout` passes; on timeout it is killed and `None`
/// is returned.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `cmd` to completion with stdin closed and both outputs captured. Panics if it
/// has not exited within [`EXIT_TIMEOUT`] (it is killed first).
pub fn run_to_exit(mut cmd: Command, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot spawn {cmd:?}: {e}"));
    let mut out = Collector::new(child.stdout.take().expect("piped stdout"));
    let mut err = Collector::new(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, EXIT_TIMEOUT);
    let stdout = out.finish();
    let stderr = err.finish();
    let Some(status) = status else {
        panic!(
            "{what}: still running after {EXIT_TIMEOUT:?}, killed it; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `rstmon run -i IFACE... --web.listen-address ADDR` inside `ns`, as a command.
pub fn run_command(ns: &Ns, ifaces: &[&str], listen: SocketAddr) -> Command {
    let mut cmd = ns.command(BIN);
    cmd.arg("run");
    for i in ifaces {
        cmd.args(["-i", i]);
    }
    cmd.args(["--web.listen-address", &listen.to_string()]);
    cmd
}

/// A response to a plain HTTP/1.0 GET.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header lines, as sent (without the status line).
    pub headers: Vec<String>,
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` over HTTP/1.0 to `addr`, from a socket created inside `ns`.
pub fn http_get(ns: &Ns, addr: SocketAddr, path: &str) -> io::Result<Response> {
    let raw = ns.run(|| -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(raw)
    })??;
    let text = String::from_utf8(raw).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response is not UTF-8: {e}"),
        )
    })?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{m}: {text:?}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    Ok(Response {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    })
}

/// A running `rstmon run` inside a namespace. Dropping it kills the process (SIGKILL) if
/// it is still running; [`Daemon::stop`] is the clean way out.
pub struct Daemon<'a> {
    ns: &'a Ns,
    pub listen: SocketAddr,
    child: Option<Child>,
    stderr: Collector,
}

impl<'a> Daemon<'a> {
    /// Starts `rstmon run` on `ifaces` inside `ns`, serving on `listen` (an address inside
    /// `ns`), and waits until /metrics answers 200.
    pub fn start(ns: &'a Ns, ifaces: &[&str], listen: SocketAddr) -> Self {
        let mut cmd = run_command(ns, ifaces, listen);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let stderr = Collector::new(child.stderr.take().expect("piped stderr"));
        let mut d = Self {
            ns,
            listen,
            child: Some(child),
            stderr,
        };
        d.wait_ready();
        // `ip netns exec` execs the program, so this PID is rstmon itself and signals
        // reach it directly.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", d.pid())).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "rstmon",
            "PID {} is not rstmon (`ip netns exec` did not exec?)",
            d.pid()
        );
        d
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon not stopped yet")
    }

    pub fn pid(&self) -> libc::pid_t {
        let id = self.child.as_ref().expect("daemon not stopped yet").id();
        libc::pid_t::try_from(id).expect("PID fits pid_t")
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Panics, with the daemon's stderr, if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child().try_wait() {
            panic!(
                "{what}: rstmon exited ({status}); stderr:\n{}",
                self.stderr()
            );
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child().try_wait() {
                panic!(
                    "rstmon exited ({status}) before serving /metrics; stderr:\n{}",
                    self.stderr.finish_text()
                );
            }
            let last = match http_get(self.ns, self.listen, "/metrics") {
                Ok(r) if r.status == 200 => return,
                Ok(r) => format!("HTTP {}", r.status),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "rstmon did not answer /metrics on {} within {START_TIMEOUT:?} (last: {last}); stderr:\n{}",
                    self.listen,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` from the daemon; panics on any failure.
    pub fn get(&self, path: &str) -> Response {
        http_get(self.ns, self.listen, path).unwrap_or_else(|e| {
            panic!(
                "GET {path} from {} failed: {e}; stderr:\n{}",
                self.listen,
                self.stderr()
            )
        })
    }

    /// The raw /metrics exposition; panics unless it is a 200.
    pub fn scrape_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(
            r.status, 200,
            "GET /metrics: HTTP {}:\n{}",
            r.status, r.body
        );
        r.body
    }

    /// /metrics, parsed.
    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.scrape_text())
    }

    /// Sends `signal` and waits for the exit; panics unless it exits 0.
    pub fn stop_with(mut self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
        let mut child = self.child.take().expect("daemon not stopped yet");
        let status = wait_timeout(&mut child, EXIT_TIMEOUT);
        let stderr = self.stderr.finish_text();
        let Some(status) = status else {
            panic!(
                "rstmon did not exit within {EXIT_TIMEOUT:?} of signal {signal}; killed it; stderr:\n{stderr}"
            );
        };
        assert!(
            status.success(),
            "rstmon exited with {status} after signal {signal}, want 0; stderr:\n{stderr}"
        );
    }

    /// SIGTERM, and the exit status must be 0.
    pub fn stop(self) {
        self.stop_with(libc::SIGTERM);
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// One series: metric name and its labels (sorted by name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Series {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Whether this series has `name` and (at least) `labels`.
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|x| x == v))
    }
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let l: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", l.join(","))?;
        }
        Ok(())
    }
}

/// A parsed text exposition: series → value.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub BTreeMap<Series, f64>);

/// Parses `k="v",k2="v2"` (the text between the braces).
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or("label without `=`")?;
        let after = after.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if out.insert(key.trim().to_string(), value).is_some() {
            return Err(format!("duplicate label {key}"));
        }
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

impl Metrics {
    /// Parses the Prometheus text format; panics on a malformed line or duplicate series.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| -> ! { panic!("bad exposition line ({why}): {line:?}") };
            let (series, rest) = match line.find(['{', ' ']) {
                Some(i) if line.as_bytes()[i] == b'{' => {
                    let close = line.rfind('}').unwrap_or_else(|| bad("no closing brace"));
                    let labels = parse_labels(&line[i + 1..close]).unwrap_or_else(|e| bad(&e));
                    (
                        Series {
                            name: line[..i].to_string(),
                            labels,
                        },
                        &line[close + 1..],
                    )
                }
                Some(i) => (Series::new(&line[..i], &[]), &line[i..]),
                None => bad("no value"),
            };
            let value: f64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| bad("value is not a number"));
            if m.insert(series.clone(), value).is_some() {
                bad(&format!("duplicate series {series}"));
            }
        }
        Self(m)
    }

    /// The value of exactly this series, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&Series::new(name, labels)).copied()
    }

    /// The value of exactly this series; panics if it is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "series {} missing from the exposition",
                Series::new(name, labels)
            )
        })
    }

    /// Every series named `name` having (at least) `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(&Series, f64)> {
        self.0
            .iter()
            .filter(|(s, _)| s.matches(name, labels))
            .map(|(s, v)| (s, *v))
            .collect()
    }

    /// `self - before` for one series, which must be in both scrapes.
    pub fn delta(&self, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> i64 {
        (self.value(name, labels) - before.value(name, labels)) as i64
    }
}

/// The program shown by `ip -n NS link show IF` on the XDP line, if one is attached
/// (`None` when the interface has no XDP program).
pub fn xdp_attachment(ns: &Ns, iface: &str) -> Option<String> {
    let out = ns
        .output("ip", &["link", "show", "dev", iface])
        .unwrap_or_else(|e| panic!("ip link show {iface}: {e}"));
    assert!(
        out.status.success(),
        "ip link show {iface} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("xdp").then_some(text)
}

/// `promtool`: $RSTMON_PROMTOOL (set by `cargo xtask test`), else the first on PATH.
pub fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("RSTMON_PROMTOOL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RSTMON_PROMTOOL={} does not exist; run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: RSTMON_PROMTOOL is unset and no promtool is on PATH; \
                 run `cargo xtask setup` (it installs target/tools/promtool) and test with \
                 `cargo xtask test`, or set RSTMON_PROMTOOL"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
