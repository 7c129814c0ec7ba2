//! `rstmon run` as a test or benchmark runs it: [`Rstmon`] says how (binary, interfaces,
//! listen address, any other arguments, stderr captured or not, CPU pinning), and
//! [`Daemon`] is the running process inside a network namespace, scraped from inside
//! that namespace.
//!
//! The binary's path is a parameter because only the crate that builds it knows it: an
//! integration test or a benchmark of rst-user passes `env!("CARGO_BIN_EXE_rstmon")`.
//!
//! Every daemon is stopped when its [`Daemon`] guard drops (also on panic), before the
//! namespaces it runs in are removed: SIGTERM, then SIGKILL after [`STOP_GRACE`].

use std::{
    ffi::OsString,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use rst_user::netns::Ns;

use crate::{
    process::{self, Collector, EXIT_TIMEOUT, Proc, wait_timeout},
    scrape::{Metrics, Response, http_get},
    tools::listening,
};

/// How long a daemon may take to load, attach and answer /metrics.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dropped daemon has to exit after SIGTERM before it is SIGKILLed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Where a daemon serves unless told otherwise: loopback of its namespace, port 9745.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9745));

/// How to run `rstmon run`. The command line is
///
/// ```text
/// [WRAPPER [WRAPPER_ARGS...]] BIN [GLOBAL_ARGS...] run [-i IFACE]... --web.listen-address LISTEN --watch.socket SOCKET [ARGS...]
/// ```
///
/// inside a namespace (`ip netns exec`, which execs, so the PID is rstmon's; a
/// [`Rstmon::wrapper`] such as `setpriv` must exec too), with stdin
/// and stdout closed and stderr captured ([`Daemon::stderr`]) unless
/// [`Rstmon::inherit_stderr`]. No `-i` at all unless [`Rstmon::iface`]/[`Rstmon::ifaces`]
/// add some; [`Rstmon::arg`]/[`Rstmon::args`] add anything else (`-i 'veth*'`,
/// `--max-samples-per-sec 0`, `--xdp-mode generic`, …).
#[derive(Clone, Debug)]
pub struct Rstmon {
    bin: String,
    /// A program (and its arguments) that runs the binary: `PROG ARGS... BIN ...`.
    wrapper: Option<(String, Vec<OsString>)>,
    global_args: Vec<OsString>,
    /// `-i NAME` pairs, before the listen address.
    iface_args: Vec<OsString>,
    /// After the listen address.
    run_args: Vec<OsString>,
    listen: SocketAddr,
    envs: Vec<(OsString, Option<OsString>)>,
    capture_stderr: bool,
    cpu: Option<usize>,
    start_timeout: Duration,
    quiet_start: bool,
    /// Ready when a plain GET of this path answers this status.
    ready: (String, u16),
    /// `--watch.socket`: empty (no stream) unless [`Rstmon::watch_socket`].
    watch_socket: OsString,
}

impl Rstmon {
    /// `BIN run --web.listen-address 127.0.0.1:9745` ([`DEFAULT_LISTEN`]), stderr captured.
    pub fn new(bin: impl Into<String>) -> Self {
        Self {
            bin: bin.into(),
            wrapper: None,
            global_args: Vec::new(),
            iface_args: Vec::new(),
            run_args: Vec::new(),
            listen: DEFAULT_LISTEN,
            envs: Vec::new(),
            capture_stderr: true,
            cpu: None,
            start_timeout: START_TIMEOUT,
            quiet_start: false,
            ready: ("/-/ready".into(), 200),
            watch_socket: OsString::new(),
        }
    }

    /// Ready once a plain HTTP GET of `path` answers `status` (default `/-/ready`, 200:
    /// the programs are attached and every family is exported; `/metrics` answers from
    /// the start): 401 with basic auth, 400 from a TLS listener.
    pub fn ready_when(mut self, path: &str, status: u16) -> Self {
        self.ready = (path.into(), status);
        self
    }

    /// The binary.
    pub fn bin(&self) -> &str {
        &self.bin
    }

    /// Runs the binary through `prog args...` (e.g. `setpriv --reuid=65534 ... --`):
    /// the command line becomes `PROG ARGS... BIN ...` inside the namespace. `prog` must
    /// exec the binary, so that the PID is still rstmon's ([`Rstmon::try_start`] checks).
    pub fn wrapper<I: IntoIterator<Item = S>, S: Into<OsString>>(
        mut self,
        prog: impl Into<String>,
        args: I,
    ) -> Self {
        self.wrapper = Some((prog.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// Where it serves (an address inside its namespace).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds `-i NAME` (a name or a glob).
    pub fn iface(mut self, name: &str) -> Self {
        self.iface_args.extend(["-i".into(), name.into()]);
        self
    }

    /// Adds `-i NAME` for each name.
    pub fn ifaces(self, names: &[&str]) -> Self {
        names.iter().fold(self, |r, n| r.iface(n))
    }

    /// Adds an argument of `rstmon run`, after the listen address.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.run_args.push(arg.into());
        self
    }

    /// Adds arguments of `rstmon run`, after the listen address.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.run_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an argument before the subcommand (`--log warn`).
    pub fn global_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.global_args.push(arg.into());
        self
    }

    /// Adds arguments before the subcommand.
    pub fn global_args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.global_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable (`RSTMON_LOG`) from the daemon's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), None));
        self
    }

    /// Lets the daemon write to this process's stderr instead of capturing it.
    pub fn inherit_stderr(mut self) -> Self {
        self.capture_stderr = false;
        self
    }

    /// Pins the daemon (every thread it starts) to one CPU.
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Waits for the listening socket (`ss`) before the first GET /metrics, so that the
    /// start makes no refused connect: counters start at 0 unless the test resets.
    pub fn quiet_start(mut self) -> Self {
        self.quiet_start = true;
        self
    }

    /// Serves the watch stream at `path` (`--watch.socket`). Without it the daemon
    /// serves none, so that a test leaves nothing in `/run` (a daemon killed by SIGKILL
    /// cannot remove its socket).
    pub fn watch_socket(mut self, path: impl Into<OsString>) -> Self {
        self.watch_socket = path.into();
        self
    }

    /// How long [`Rstmon::start`] waits for /metrics (default [`START_TIMEOUT`]).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// The command line inside `ns`, for a run expected to fail (see
    /// [`crate::process::run_to_exit`]) or to be spawned some other way. Stdio is not set;
    /// [`Rstmon::cpu`] and [`Rstmon::inherit_stderr`] apply only to [`Rstmon::start`].
    pub fn command(&self, ns: &Ns) -> Command {
        let mut cmd = match &self.wrapper {
            Some((prog, args)) => {
                let mut c = ns.command(prog);
                c.args(args).arg(&self.bin);
                c
            }
            None => ns.command(&self.bin),
        };
        cmd.args(&self.global_args)
            .arg("run")
            .args(&self.iface_args)
            .args(["--web.listen-address", &self.listen.to_string()])
            .arg("--watch.socket")
            .arg(&self.watch_socket)
            .args(&self.run_args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Starts the daemon inside `ns` and waits until /metrics answers 200; the error says
    /// why not (with the daemon's stderr when captured).
    pub fn try_start<'a>(&self, ns: &'a Ns) -> io::Result<Daemon<'a>> {
        let mut cmd = self.command(ns);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if self.capture_stderr {
            cmd.stderr(Stdio::piped());
        } else {
            cmd.stderr(Stdio::inherit());
        }
        let mut child = process::spawn(&mut cmd, self.cpu)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot spawn {cmd:?}: {e}")))?;
        let stderr = child.stderr.take().map(Collector::new);
        let pid = libc::pid_t::try_from(child.id()).expect("PID fits pid_t");
        let mut d = Daemon {
            ns,
            listen: self.listen,
            child: Some(child),
            pid,
            stderr,
        };
        d.wait_ready(&self.ready, self.start_timeout, self.quiet_start)?;
        // `ip netns exec` execs the program, so this PID is rstmon itself and signals
        // reach it directly.
        let comm = d.proc().comm();
        if comm != "rstmon" {
            return Err(io::Error::other(format!(
                "PID {pid} is not rstmon but {comm:?} (`ip netns exec` did not exec?)"
            )));
        }
        Ok(d)
    }

    /// [`Rstmon::try_start`]; panics on failure.
    pub fn start<'a>(&self, ns: &'a Ns) -> Daemon<'a> {
        self.try_start(ns).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A running `rstmon run` inside a namespace. Dropping it stops the process (SIGTERM,
/// SIGKILL after [`STOP_GRACE`]) if it is still running; [`Daemon::stop`] is the clean
/// way out, which also checks the exit status.
pub struct Daemon<'a> {
    ns: &'a Ns,
    /// Where it serves, inside [`Daemon::ns`].
    pub listen: SocketAddr,
    child: Option<Child>,
    pid: libc::pid_t,
    /// `None` when stderr is inherited.
    stderr: Option<Collector>,
}

impl<'a> Daemon<'a> {
    /// `BIN run -i IFACE... --web.listen-address LISTEN` inside `ns`, stderr captured;
    /// waits until /metrics answers 200 and panics if it does not. [`Rstmon`] for more.
    pub fn start(bin: &str, ns: &'a Ns, ifaces: &[&str], listen: SocketAddr) -> Self {
        Rstmon::new(bin).ifaces(ifaces).listen(listen).start(ns)
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &'a Ns {
        self.ns
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Its `/proc` figures (CPU time, context switches, memory).
    pub fn proc(&self) -> Proc {
        Proc(self.pid)
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon not stopped yet")
    }

    /// Everything the daemon wrote to stderr so far (a note if stderr is not captured).
    pub fn stderr(&self) -> String {
        match &self.stderr {
            Some(c) => c.text(),
            None => "(not captured)".into(),
        }
    }

    /// Waits for stderr to be closed (the daemon has exited) and returns all of it.
    fn finish_stderr(&mut self) -> String {
        match &mut self.stderr {
            Some(c) => c.finish_text(),
            None => "(not captured)".into(),
        }
    }

    /// Its exit status, if it has exited (it is not reaped: [`Daemon::stop`] still works
    /// the same).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Panics, with the daemon's stderr, if it has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{what}: rstmon exited ({status}); stderr:\n{}",
                self.stderr()
            );
        }
    }

    fn wait_ready(
        &mut self,
        (path, status): &(String, u16),
        timeout: Duration,
        quiet: bool,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(io::Error::other(format!(
                    "rstmon exited ({status}) before serving /metrics; stderr:\n{}",
                    self.finish_stderr()
                )));
            }
            let last = if quiet && !listening(self.ns, self.listen) {
                "not listening yet".to_string()
            } else {
                match http_get(self.ns, self.listen, path) {
                    Ok(r) if r.status == *status => return Ok(()),
                    Ok(r) => format!("HTTP {}", r.status),
                    Err(e) => e.to_string(),
                }
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "rstmon did not answer {path} with {status} on {} within {timeout:?} (last: {last}); stderr:\n{}",
                        self.listen,
                        self.stderr()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` from the daemon, from inside its namespace.
    pub fn try_get(&self, path: &str) -> io::Result<Response> {
        http_get(self.ns, self.listen, path)
    }

    /// GET `path` from the daemon; panics on any failure.
    pub fn get(&self, path: &str) -> Response {
        self.try_get(path).unwrap_or_else(|e| {
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

    /// Sends `signal` and waits for the exit (at most [`EXIT_TIMEOUT`]); returns the
    /// status and everything the daemon wrote to stderr. Panics if it does not exit.
    pub fn signal_and_wait(mut self, signal: libc::c_int) -> (ExitStatus, String) {
        let pid = self.pid;
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
        let stderr = self.finish_stderr();
        let Some(status) = status else {
            panic!(
                "rstmon did not exit within {EXIT_TIMEOUT:?} of signal {signal}; killed it; stderr:\n{stderr}"
            );
        };
        (status, stderr)
    }

    /// Sends `signal` and waits for the exit; panics unless it exits 0.
    pub fn stop_with(self, signal: libc::c_int) {
        let (status, stderr) = self.signal_and_wait(signal);
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
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            // SAFETY: our own child, not reaped yet.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            if wait_timeout(&mut child, STOP_GRACE).is_none() {
                // wait_timeout has SIGKILLed and reaped it.
                return;
            }
        }
        let _ = child.wait();
        process::forget(self.pid);
    }
}
