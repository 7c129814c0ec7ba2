//! A real Prometheus server (Debian's, unpacked into target/tools by `cargo xtask
//! setup`) inside a test's network namespace: it scrapes a daemon there every second and
//! answers PromQL over its HTTP API ([`Prometheus::query`]). Stopped (SIGTERM) and its
//! data directory removed when the guard drops.

use std::{
    fmt::Write as _,
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use rst_user::netns::Ns;
use serde_json::Value;

use crate::{
    process::{self, Collector, wait_timeout},
    scrape::http_get,
    tools::{listening, tool},
};

/// Where Prometheus listens inside the namespace.
pub const PROMETHEUS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
/// Its scrape and rule evaluation interval.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A running `prometheus` in a namespace.
pub struct Prometheus<'a> {
    ns: &'a Ns,
    child: Option<Child>,
    dir: PathBuf,
    stderr: Collector,
}

/// One series of an instant vector: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name` ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

impl<'a> Prometheus<'a> {
    /// Starts $RSTMON_PROMETHEUS (or `prometheus` on PATH) in `ns`, scraping `target`
    /// (job `rstmon`) every [`SCRAPE_INTERVAL`], with `rule_files` loaded; waits until it
    /// is ready.
    pub fn start(ns: &'a Ns, target: SocketAddr, rule_files: &[&Path]) -> Self {
        let bin = tool("RSTMON_PROMETHEUS", "prometheus");
        let dir = std::env::temp_dir().join(format!(
            "rstmon-prometheus-{}-{}",
            std::process::id(),
            ns.name
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("prometheus dir");
        let s = SCRAPE_INTERVAL.as_secs();
        let mut config =
            format!("global:\n  scrape_interval: {s}s\n  evaluation_interval: {s}s\nrule_files:\n");
        for f in rule_files {
            let _ = writeln!(config, "  - {}", f.display());
        }
        let _ = write!(
            config,
            "scrape_configs:\n  - job_name: rstmon\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let cfg = dir.join("prometheus.yml");
        fs::write(&cfg, config).expect("prometheus.yml");
        let mut cmd = ns.command(&bin.display().to_string());
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_LISTEN}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child =
            process::spawn(&mut cmd, None).unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let stderr = Collector::new(child.stderr.take().expect("piped stderr"));
        let mut p = Self {
            ns,
            child: Some(child),
            dir,
            stderr,
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    self.stderr.finish_text()
                );
            }
            // Not a connect before it listens: a refused one would be a reset rstmon counts.
            if listening(self.ns, PROMETHEUS_LISTEN)
                && http_get(self.ns, PROMETHEUS_LISTEN, "/-/ready").is_ok_and(|r| r.status == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                self.stderr.text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET an API path; the `data` member of a `"status": "success"` answer.
    pub fn api(&self, path: &str) -> Value {
        let r = http_get(self.ns, PROMETHEUS_LISTEN, path)
            .unwrap_or_else(|e| panic!("GET {path} from prometheus: {e}"));
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.body));
        assert!(
            r.status == 200 && v["status"] == "success",
            "GET {path}: HTTP {}: {}",
            r.status,
            r.body
        );
        v["data"].clone()
    }

    /// An instant query evaluated at `time` (Unix seconds; `None`: now). Panics unless
    /// the result is a vector.
    pub fn query(&self, promql: &str, time: Option<f64>) -> Vec<Sample> {
        let mut path = format!("/api/v1/query?query={}", urlencode(promql));
        if let Some(t) = time {
            let _ = write!(path, "&time={t:.3}");
        }
        let data = self.api(&path);
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| Sample {
                labels: s["metric"].as_object().cloned().unwrap_or_default(),
                value: s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{promql}: bad sample {s}")),
            })
            .collect()
    }

    /// Polls `promql` (now) until `done` holds for its result; panics after `timeout`.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(promql, None);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: still {r:?} after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = wait_timeout(&mut child, Duration::from_secs(10));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
