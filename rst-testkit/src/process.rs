//! Child processes of tests and benchmarks: spawning them so that an interrupted run can
//! kill them ([`spawn`], [`kill_children`]), collecting their output without blocking
//! them ([`Collector`]), bounded waits ([`wait_timeout`], [`run_to_exit`]), CPU pinning
//! ([`pin_thread`]) and what `/proc` says about a running process ([`Proc`]).

use std::{
    fs, io,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// How long a process may take to exit (after a signal, or on an error path).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

const POLL: Duration = Duration::from_millis(50);

/// Every child spawned through [`spawn`] that has not been [`forget`]-ten yet.
static CHILDREN: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// A `cpu_set_t` with only `cpu` in it.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_thread(cpu: usize) {
    let set = cpu_set(cpu);
    // SAFETY: a valid cpu_set_t of the size given; 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
}

/// CPU time of the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spawns `cmd` with an empty signal mask (the mask is inherited across exec, and
/// [`rst_user::netns::on_interrupt`] blocks SIGINT/SIGTERM), pinned to `cpu` if given,
/// and registers it for [`kill_children`].
pub fn spawn(cmd: &mut Command, cpu: Option<usize>) -> io::Result<Child> {
    let set = cpu.map(cpu_set);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut mask);
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
            if let Some(set) = &set
                && libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child.id() as libc::pid_t);
    Ok(child)
}

/// Removes `pid` from the children [`kill_children`] kills (it has been reaped).
pub fn forget(pid: libc::pid_t) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

/// SIGKILLs every child spawned through [`spawn`] and not forgotten: for the clean-up of
/// an interrupted run ([`rst_user::netns::on_interrupt`]).
pub fn kill_children() {
    for pid in CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        // SAFETY: signalling a child this process spawned, by its PID.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// Collects a pipe on a thread so the child never blocks on a full pipe.
pub struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    pub fn new(mut pipe: impl io::Read + Send + 'static) -> Self {
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

    /// Everything collected so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits for EOF (the child has exited) and returns everything.
    pub fn finish(&mut self) -> Vec<u8> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn finish_text(&mut self) -> String {
        String::from_utf8_lossy(&self.finish()).into_owned()
    }
}

/// Polls `child` until it exits or `timeout` passes; on timeout it is killed and `None`
/// is returned.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    forget(child.id() as libc::pid_t);
    status
}

/// Runs `cmd` to completion with stdin closed and both outputs captured. Panics if it
/// has not exited within [`EXIT_TIMEOUT`] (it is killed first).
pub fn run_to_exit(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        spawn(&mut cmd, None).unwrap_or_else(|e| panic!("{what}: cannot spawn {cmd:?}: {e}"));
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

/// A running process as `/proc/PID` shows it: CPU time, context switches, memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc(pub libc::pid_t);

impl Proc {
    fn tasks(&self) -> Vec<PathBuf> {
        fs::read_dir(format!("/proc/{}/task", self.0))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// CPU time over all threads (schedstat, ns).
    pub fn cpu_ns(&self) -> u64 {
        self.tasks()
            .iter()
            .filter_map(|t| fs::read_to_string(t.join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// utime + stime from /proc/PID/stat, in clock ticks.
    pub fn stat_ticks(&self) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the comm: state is index 0, utime 14th field → index 11.
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    }

    /// (voluntary, involuntary) context switches over all threads.
    pub fn switches(&self) -> (u64, u64) {
        let mut v = (0, 0);
        for t in self.tasks() {
            let s = fs::read_to_string(t.join("status")).unwrap_or_default();
            for l in s.lines() {
                let num = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if l.starts_with("voluntary_ctxt_switches") {
                    v.0 += num(l);
                } else if l.starts_with("nonvoluntary_ctxt_switches") {
                    v.1 += num(l);
                }
            }
        }
        v
    }

    /// A `kB` line of /proc/PID/status (`"VmRSS:"`, `"VmHWM:"`), 0 if absent.
    pub fn status_kib(&self, key: &str) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.0))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// The command name (`/proc/PID/comm`, without the newline); empty if gone.
    pub fn comm(&self) -> String {
        fs::read_to_string(format!("/proc/{}/comm", self.0))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}
