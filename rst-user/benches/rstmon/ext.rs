//! The external programs the benchmarks run beside rstmon: where they are, and a guard
//! that stops one by its PID. `cargo xtask bench` installs them (`bpftrace` from
//! Debian; Debian's `prometheus-node-exporter` binary taken out of its package into
//! `target/tools`, so that no service is installed or started).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use rst_testkit::process::{self, wait_timeout};
use rst_user::netns::Ns;

/// Debian's node_exporter: `target/tools/prometheus-node-exporter` (where `cargo xtask
/// bench` puts it), else `prometheus-node-exporter` or `node_exporter` on PATH.
pub fn node_exporter() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let local = root.join("target/tools/prometheus-node-exporter");
    if local.is_file() {
        return Some(local);
    }
    on_path("prometheus-node-exporter").or_else(|| on_path("node_exporter"))
}

/// `bpftrace` on PATH.
pub fn bpftrace() -> Option<PathBuf> {
    on_path("bpftrace")
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Fails, naming what to run, unless the programs the selected benchmarks need are
/// there: checked before anything is measured, not half-way through a long run.
pub fn preflight(p4: bool, p5: bool) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if p4 && node_exporter().is_none() {
        missing.push("node_exporter (Debian's prometheus-node-exporter, for the P4 anchor)");
    }
    if p5 && bpftrace().is_none() {
        missing.push("bpftrace (the P5 baseline)");
    }
    if !missing.is_empty() {
        bail!(
            "missing: {}; `cargo xtask bench` installs them (or `cargo xtask setup`)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `ip -n NS -batch -` with `lines` on its stdin: thousands of links in one process.
pub fn ip_batch(ns: &Ns, lines: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip -batch -` (install iproute2)")?;
    {
        let mut stdin = child.stdin.take().context("ip stdin")?;
        let mut text = String::new();
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`ip -n {} -batch -` failed: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A child process that is stopped by its PID when dropped: `signal` first, SIGKILL
/// after a grace period.
pub struct Guard {
    pub child: Child,
    signal: libc::c_int,
}

impl Guard {
    /// Spawns `cmd` (see [`process::spawn`]), pinned to `cpu` if given.
    pub fn spawn(
        cmd: &mut Command,
        cpu: Option<usize>,
        signal: libc::c_int,
    ) -> anyhow::Result<Self> {
        let child = process::spawn(cmd, cpu).with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self { child, signal })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Sends the stop signal and waits (at most 10 s, then SIGKILL); true if it exited
    /// by itself.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            process::forget(self.pid());
            return true;
        }
        // SAFETY: kill(2) of our own child, not reaped yet.
        unsafe { libc::kill(self.pid(), self.signal) };
        wait_timeout(&mut self.child, Duration::from_secs(10)).is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}
