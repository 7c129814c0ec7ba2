//! `rstmon watch` as a test runs it: [`Watcher`] is the running process, its stdout
//! and stderr collected on threads (so it never blocks on a full pipe unless it is
//! stopped), killed by its PID when the guard drops.

use std::{
    io,
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::process::{self, Collector, EXIT_TIMEOUT, wait_timeout};

/// What `watch` logs once it is reading samples, in either mode.
pub const READY: &str = "watching resets";

/// A running `rstmon watch`.
pub struct Watcher {
    child: Option<Child>,
    pid: libc::pid_t,
    stdout: Collector,
    stderr: Collector,
}

impl Watcher {
    /// Spawns `cmd` (a `rstmon watch ...` command line) with stdin closed and both
    /// outputs collected.
    pub fn spawn(mut cmd: Command) -> io::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = process::spawn(&mut cmd, None)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot spawn {cmd:?}: {e}")))?;
        let stdout = Collector::new(child.stdout.take().expect("piped stdout"));
        let stderr = Collector::new(child.stderr.take().expect("piped stderr"));
        let pid = libc::pid_t::try_from(child.id()).expect("PID fits pid_t");
        Ok(Self {
            child: Some(child),
            pid,
            stdout,
            stderr,
        })
    }

    /// Spawns `cmd` and waits until it says [`READY`]; panics (with its stderr) if it
    /// exits first or takes longer than `timeout`.
    pub fn start(cmd: Command, timeout: Duration) -> Self {
        let mut w = Self::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + timeout;
        while !w.stderr().contains(READY) {
            if let Some(status) = w.exited() {
                panic!(
                    "rstmon watch exited ({status}) before it was ready; stderr:\n{}",
                    w.stderr.finish_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rstmon watch not ready within {timeout:?}; stderr:\n{}",
                w.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
        w
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The complete lines it printed on stdout so far.
    pub fn lines(&self) -> Vec<String> {
        let text = self.stdout.text();
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Everything it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to it.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet (the guard holds it).
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    /// SIGTERM, and waits for the exit; returns the status and all of stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("not stopped yet");
        let status = wait_timeout(&mut child, EXIT_TIMEOUT);
        let stderr = self.stderr.finish_text();
        let status = status.unwrap_or_else(|| {
            panic!(
                "rstmon watch did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{stderr}"
            )
        });
        (status, stderr)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child, not reaped yet (SIGKILL ends a stopped one too).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = child.wait();
            process::forget(self.pid);
        }
    }
}
