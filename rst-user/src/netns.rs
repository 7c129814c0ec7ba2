//! Throwaway network namespaces and veth pairs for `rstmon selftest`, the integration
//! tests and the benchmarks. Everything created is registered and removed on drop, on
//! [`cleanup_all_and_exit`] (for signal handlers), or by [`sweep_stale`] after a crash.

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::{Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

/// Every namespace this process made and has not deleted yet.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Name prefix of every namespace rstmon creates: `rstmon-<pid>-<n>`.
pub const PREFIX: &str = "rstmon-";

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `ip`: {e} (install iproute2)")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    /// Creates `rstmon-<pid>-<n>` with loopback up.
    pub fn new() -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        {
            // Held across the creation, so that `cleanup_all_and_exit` (signal
            // handlers) never misses a namespace that is being made.
            let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
            ip(&["netns", "add", &name])?;
            live.push(name.clone());
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn output(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets created there stay
    /// in the namespace for their whole life, wherever they are used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; setns only affects this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("namespace thread panicked"))?
        })
    }

    /// ifindex of `iface` inside the namespace.
    pub fn ifindex(&self, iface: &str) -> io::Result<u32> {
        let out = self.output("cat", &[&format!("/sys/class/net/{iface}/ifindex")])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| io::Error::other(format!("no interface {iface} in {}", self.name)))
    }

    /// `nstat -az` counters of the namespace (kernel SNMP/netstat), by name.
    pub fn nstat(&self) -> io::Result<std::collections::BTreeMap<String, u64>> {
        let out = self.output("nstat", &["-asz", "--json"])?;
        if !out.status.success() {
            return Err(io::Error::other("nstat failed (install iproute2)"));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| io::Error::other(format!("nstat output: {e}")))?;
        let mut m = std::collections::BTreeMap::new();
        if let Some(obj) = v.get("kernel").and_then(|k| k.as_object()) {
            for (k, v) in obj {
                if let Some(n) = v.as_u64() {
                    m.insert(k.clone(), n);
                }
            }
        }
        Ok(m)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        let _ = ip(&["netns", "del", &self.name]);
        live.retain(|n| n != &self.name);
    }
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses on each end.
#[derive(Debug)]
pub struct Pair {
    pub a: Ns,
    pub b: Ns,
    /// Interface names inside `a` and `b`.
    pub a_if: String,
    pub b_if: String,
    pub a4: Ipv4Addr,
    pub b4: Ipv4Addr,
    pub a6: Ipv6Addr,
    pub b6: Ipv6Addr,
}

impl Pair {
    /// Creates two namespaces joined by veth `ra<n>`/`rb<n>` on 10.213.<n>.0/24 and
    /// fd00:5253:0:<n>::/64. The addresses exist only inside these namespaces.
    pub fn new() -> io::Result<Self> {
        let a = Ns::new()?;
        let b = Ns::new()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 250;
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let a_if = format!("ra{tag}");
        let b_if = format!("rb{tag}");
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ])?;
        let a4 = Ipv4Addr::new(10, 213, n as u8, 1);
        let b4 = Ipv4Addr::new(10, 213, n as u8, 2);
        let a6: Ipv6Addr = format!("fd00:5253:0:{n:x}::1").parse().expect("valid");
        let b6: Ipv6Addr = format!("fd00:5253:0:{n:x}::2").parse().expect("valid");
        for (ns, ifn, v4, v6) in [(&a, &a_if, a4, a6), (&b, &b_if, b4, b6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifn])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifn,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifn, "up"])?;
        }
        Ok(Self {
            a,
            b,
            a_if,
            b_if,
            a4,
            b4,
            a6,
            b6,
        })
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it starts
/// afterwards) and runs `f` on a dedicated thread when one of them arrives: `f` can clean
/// up with ordinary code, which a signal handler could not.
pub fn on_interrupt(f: impl FnOnce() + Send + 'static) {
    // SAFETY: plain signal-mask manipulation on a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            f();
        });
    }
}

/// Deletes every namespace this process still has and exits (for signal handlers). The
/// registry stays locked until the exit, so no namespace is made or half-made after it.
pub fn cleanup_all_and_exit(code: i32) -> ! {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    for n in live.drain(..) {
        let _ = ip(&["netns", "del", &n]);
    }
    std::process::exit(code)
}

/// Deletes `rstmon-<pid>-*` namespaces whose process is gone (left by a killed run).
pub fn sweep_stale() -> usize {
    let mut removed = 0;
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return 0;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && ip(&["netns", "del", &name]).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
