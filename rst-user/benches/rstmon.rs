//! rstmon benchmarks: `cargo xtask bench` (as root), or
//! `cargo bench -p rst-user --bench rstmon -- [--quick] [--only P1,P2,P3,P4] [--no-write]`.
//!
//! Prints one table and, after a full run, writes it with the date, kernel and CPU into
//! `docs/performance.md`, below the hand-written method (see [`RESULTS_MARKER`]). Every
//! measurement is interleaved with its baseline in the same run (A B A B…, alternating
//! the order), at least five rounds, and reported as median (min–max). Progress goes to
//! stderr.

use std::{
    fmt::Write as _,
    fs,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{TestRun as _, TestRunOptions, Xdp, XdpMode},
};
use rst_common::{
    MAP_EVENTS, MAP_STATS, MAP_WIRE_COUNTERS, PROG_XDP, PROG_XDP_NOOP, STAT_WIRE_RATE_LIMITED,
    STAT_WIRE_RING_FULL, STAT_WIRE_SAMPLED, TCP_ACK, TCP_RST, TraceOffsets, WireKey,
    frames::{Frame, Tcp, Vlan},
    globals,
};
use rst_user::{
    drain,
    events::Event,
    ifaces::Iface,
    loader::{Config, EBPF_OBJECT, Monitor, XdpModeArg, possible_cpus},
    netns::{Ns, Pair},
};
use tokio::sync::watch;

/// The daemon's own setting (`rstmon run`): a forced wakeup per 64 KiB of samples.
const WAKEUP_BYTES: u32 = 64 * 1024;
/// The daemon's default `--max-samples-per-sec`.
const DEFAULT_SAMPLES_PER_SEC: u32 = 20_000;
/// CPU that runs the packet path (test_run, generator, softirq).
const CPU_PACKETS: usize = 0;
/// CPU for user space that consumes (drain thread, tcpdump, daemon).
const CPU_CONSUMER: usize = 1;

// --- options, progress, statistics -------------------------------------------------------

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    write: bool,
}

impl Opts {
    fn parse() -> anyhow::Result<Self> {
        let mut o = Opts {
            quick: false,
            only: None,
            write: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-write" => o.write = false,
                "--only" => {
                    let v = args.next().context("--only needs a list, e.g. P1,P3")?;
                    o.only = Some(v.split(',').map(|s| s.trim().to_uppercase()).collect());
                }
                // cargo bench passes --bench to harness=false targets.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: rstmon-bench [--quick] [--only P1,P2,P3,P4] [--no-write]\n\
                         Writes docs/performance.md after a full (not --quick, not --only) run."
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other} (try --help)"),
            }
        }
        Ok(o)
    }

    fn wants(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|x| x == id))
    }

    fn full(&self) -> bool {
        !self.quick && self.only.is_none()
    }
}

static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn progress(msg: impl AsRef<str>) {
    let t = T0.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {}", msg.as_ref());
}

#[derive(Clone, Copy, Debug)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn summarize(v: &[f64]) -> Summary {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        return Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            n,
        };
    }
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Summary {
        median,
        min: s[0],
        max: s[n - 1],
        n,
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

impl Summary {
    fn fmt(&self, digits: usize, unit: &str) -> String {
        format!(
            "{:.d$}{unit} ({:.d$}–{:.d$}, n={})",
            self.median,
            self.min,
            self.max,
            self.n,
            d = digits
        )
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.3} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

struct Row {
    id: &'static str,
    measure: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
    /// None: informational row.
    pass: Option<bool>,
}

impl Row {
    fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "**miss**",
            None => "info",
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| id | measure | value: median (min–max, n) | baseline in the same run | ratio | target | result |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.measure,
            r.value,
            r.baseline,
            r.ratio,
            r.target,
            r.verdict()
        );
    }
    s
}

// --- small system helpers ------------------------------------------------------------------

/// Children (tcpdump, the daemon) to kill if the run is interrupted.
static CHILDREN: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Blocks SIGINT/SIGTERM in every thread and handles them on a dedicated one: children
/// are killed and the namespaces made so far deleted before the process exits.
fn cleanup_on_signal() {
    rst_user::netns::on_interrupt(|| {
        eprintln!("bench: interrupted; stopping children and removing namespaces");
        for pid in CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // SAFETY: signalling a child this process spawned, by its PID.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        rst_user::netns::cleanup_all_and_exit(130);
    });
}

/// Spawns `cmd` with SIGINT/SIGTERM unblocked again (the mask is inherited across exec)
/// and registers it for [`cleanup_on_signal`].
fn spawn_child(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(child.id() as i32);
    Ok(child)
}

fn forget_child(pid: i32) {
    CHILDREN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

/// Pins the calling thread to one CPU.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("{model} ({} CPUs)", possible_cpus())
}

/// Today as YYYY-MM-DD (UTC), without a date crate.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn mac_of(ns: &Ns, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.output("cat", &[&format!("/sys/class/net/{ifname}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        bail!("cannot read the MAC of {ifname}: {text:?}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

/// Turns GRO on for `ifname` (legacy ETHTOOL_SGRO ioctl). On a veth, GRO gives the
/// receiving end a NAPI context, which XDP_TX/redirect into the pair needs when no XDP
/// program is attached to the receiver. Call from a thread inside the namespace.
fn set_gro(ifname: &str) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const ETHTOOL_SGRO: u32 = 0x2c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    let n = ifname.len().min(15);
    req.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    // SAFETY: plain socket/ioctl/close with valid pointers.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// `Tcp:` counters of the calling thread's network namespace.
fn tcp_mib() -> io::Result<std::collections::BTreeMap<String, u64>> {
    let text = fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(h), Some(v)) = (tcp.next(), tcp.next()) else {
        return Err(io::Error::other("no Tcp: lines in snmp"));
    };
    Ok(h.split_whitespace()
        .zip(v.split_whitespace())
        .skip(1)
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

/// An RST from the pair's `a` end to a closed port (9, discard) on its `b` end, with
/// correct checksums: the receiving TCP stack validates it, finds no socket, and drops
/// it without answering (an RST is never answered).
fn rst_to(pair: &Pair, dst_mac: [u8; 6], src_mac: [u8; 6], sport: u16, flags: u8) -> Vec<u8> {
    let mut f = Frame::tcp4(flags)
        .with_ipv4(|ip| {
            ip.src = pair.a4.octets();
            ip.dst = pair.b4.octets();
        })
        .with_tcp(|t| {
            t.sport = sport;
            t.dport = 9;
        });
    f.dst_mac = dst_mac;
    f.src_mac = src_mac;
    f.build().bytes
}

// --- raw BPF syscalls for the traffic generator --------------------------------------------

/// The traffic generator: a two-instruction XDP program (`return XDP_TX`) run with
/// BPF_PROG_TEST_RUN in live-frames mode on one end of a veth pair. Live frames turn
/// XDP_TX into a real transmission out of that veth, so every frame crosses the pair and
/// is received by the other end (its XDP hook, then its TCP stack) like wire traffic.
mod generator {
    use std::{
        io,
        os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    };

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }

    #[repr(C)]
    struct XdpMd {
        data: u32,
        data_end: u32,
        data_meta: u32,
        ingress_ifindex: u32,
        rx_queue_index: u32,
        egress_ifindex: u32,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: attr is a valid bpf_attr prefix of the given size; the kernel
        // zero-extends the rest.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                (attr as *mut T).cast::<libc::c_void>(),
                size_of::<T>(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    pub struct Generator {
        fd: OwnedFd,
    }

    impl Generator {
        /// Loads `r0 = XDP_TX; exit`.
        pub fn load() -> io::Result<Self> {
            let insns: [u64; 2] = [0xb7 | (3u64 << 32), 0x95];
            let license = b"GPL\0";
            let mut name = [0u8; 16];
            name[..13].copy_from_slice(b"rstmon_gen_tx");
            let mut attr = ProgLoad {
                prog_type: BPF_PROG_TYPE_XDP,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                prog_name: name,
                ..Default::default()
            };
            let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
            // SAFETY: the kernel returned a new fd that we own.
            Ok(Self {
                fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            })
        }

        /// Sends `repeat` copies of `frame` out of `ifindex` (in the calling thread's
        /// network namespace).
        pub fn send(&self, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<()> {
            let ctx = XdpMd {
                data: 0,
                data_end: frame.len() as u32,
                data_meta: 0,
                ingress_ifindex: ifindex,
                rx_queue_index: 0,
                egress_ifindex: 0,
            };
            let mut attr = TestRun {
                prog_fd: self.fd.as_raw_fd() as u32,
                data_size_in: frame.len() as u32,
                data_in: frame.as_ptr() as u64,
                repeat,
                ctx_size_in: size_of::<XdpMd>() as u32,
                ctx_in: (&raw const ctx) as u64,
                flags: BPF_F_TEST_XDP_LIVE_FRAMES,
                ..Default::default()
            };
            bpf(BPF_PROG_TEST_RUN, &mut attr).map(|_| ())
        }
    }
}

use generator::Generator;

/// Sends frames at `rate` per second in all (0 = as fast as possible) for about `dur`,
/// from one thread per CPU in `cpus`, each pinned and inside `ns`. Returns (frames sent,
/// elapsed).
///
/// Each live-frames test_run call costs about 27 ms of set-up and tear-down on this VM
/// (a page pool per call, released after an RCU grace period), whatever its size: at full
/// speed every call is sized to last about half a second; paced, calls are at least 50 ms
/// of traffic apart.
fn generate(
    ns: &Ns,
    gen_: &Generator,
    frame: &[u8],
    ifindex: u32,
    rate: f64,
    dur: Duration,
    cpus: &[usize],
) -> anyhow::Result<(u64, Duration)> {
    let per_cpu = rate / cpus.len() as f64;
    let t0 = Instant::now();
    let results: Vec<io::Result<u64>> = thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> io::Result<u64> {
                    ns.run(|| -> io::Result<u64> {
                        pin(cpu);
                        let mut sent = 0u64;
                        let mut chunk: u32 = 131_072;
                        let min_chunk = (per_cpu * 0.05).max(1.0) as u64;
                        loop {
                            let el = t0.elapsed();
                            if el >= dur {
                                return Ok(sent);
                            }
                            if per_cpu <= 0.0 {
                                let c = Instant::now();
                                gen_.send(frame, ifindex, chunk)?;
                                sent += u64::from(chunk);
                                let fps = f64::from(chunk) / c.elapsed().as_secs_f64().max(1e-6);
                                chunk = (fps * 0.5).clamp(16_384.0, 16_777_216.0) as u32;
                            } else {
                                let due = (per_cpu * el.as_secs_f64()) as u64;
                                if due < sent + min_chunk {
                                    thread::sleep(Duration::from_millis(1));
                                    continue;
                                }
                                let n = (due - sent).min(1 << 24) as u32;
                                gen_.send(frame, ifindex, n)?;
                                sent += u64::from(n);
                            }
                        }
                    })?
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("generator thread panicked")))
            })
            .collect()
    });
    let el = t0.elapsed();
    let mut sent = 0;
    for r in results {
        sent += r?;
    }
    Ok((sent, el))
}

/// Replaces the pair's veth with one that has a receive queue per CPU, so that traffic
/// generated on both CPUs is received on both (a veth picks the peer's queue by the
/// sending CPU), and turns GRO on at the receiving end (see [`set_gro`]).
fn make_multiqueue(pair: &Pair, queues: usize) -> anyhow::Result<()> {
    let q = queues.to_string();
    pair.a.ip(&["link", "del", &pair.a_if])?;
    let out = Command::new("ip")
        .args([
            "link",
            "add",
            &pair.a_if,
            "netns",
            &pair.a.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b_if,
            "netns",
            &pair.b.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "ip link add (multi-queue veth): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for (ns, ifn, v4) in [
        (&pair.a, &pair.a_if, pair.a4),
        (&pair.b, &pair.b_if, pair.b4),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifn])?;
        ns.ip(&["link", "set", ifn, "up"])?;
    }
    let b_if = pair.b_if.clone();
    pair.b.run(|| set_gro(&b_if))??;
    Ok(())
}

// --- loading the object for BPF_PROG_TEST_RUN -----------------------------------------------

fn load_object(samples_per_cpu: u32) -> anyhow::Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        bail!("built without the eBPF object (AYA_BUILD_SKIP): rebuild normally");
    }
    let ebpf = EbpfLoader::new()
        .override_global(globals::TRACE_OFFSETS, &TraceOffsets::NONE, true)
        .override_global(globals::WIRE_SAMPLES_PER_SEC, &samples_per_cpu, true)
        .override_global(globals::WAKEUP_BYTES, &WAKEUP_BYTES, true)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object")?;
    Ok(ebpf)
}

fn load_xdp(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?;
    p.load()
        .with_context(|| format!("loading {name} (verifier)"))?;
    Ok(())
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .and_then(|p| <&Xdp>::try_from(p).ok())
        .expect("program loaded above")
}

fn stat_sum(ebpf: &Ebpf, idx: u32) -> u64 {
    let Some(map) = ebpf.map(MAP_STATS) else {
        return 0;
    };
    PerCpuArray::<_, u64>::try_from(map)
        .ok()
        .and_then(|a| a.get(&idx, 0).ok())
        .map(|v| v.iter().sum())
        .unwrap_or(0)
}

fn wire_total(ebpf: &Ebpf) -> u64 {
    let Some(map) = ebpf.map(MAP_WIRE_COUNTERS) else {
        return 0;
    };
    PerCpuHashMap::<_, WireKey, u64>::try_from(map)
        .map(|m| m.iter().flatten().map(|(_, v)| v.iter().sum::<u64>()).sum())
        .unwrap_or(0)
}

/// The daemon's drain loop (`drain::run`) on its own thread, pinned to [`CPU_CONSUMER`],
/// counting wire samples. Stop it with [`Drainer::stop`].
struct Drainer {
    stop: watch::Sender<bool>,
    handle: thread::JoinHandle<io::Result<()>>,
    wire: Arc<AtomicU64>,
}

impl Drainer {
    fn start(events: RingBuf<MapData>) -> Self {
        let (stop, rx) = watch::channel(false);
        let wire = Arc::new(AtomicU64::new(0));
        let w = wire.clone();
        let handle = thread::spawn(move || {
            pin(CPU_CONSUMER);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drain::run(events, rx, move |ev| {
                if let Ok(Event::Wire(_)) = ev {
                    w.fetch_add(1, Ordering::Relaxed);
                }
            }))
        });
        Self { stop, handle, wire }
    }

    /// Drains what is left and returns the number of wire samples received.
    fn stop(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        self.handle
            .join()
            .map_err(|_| anyhow!("drain thread panicked"))??;
        Ok(self.wire.load(Ordering::Relaxed))
    }
}

fn take_events(ebpf: &mut Ebpf) -> anyhow::Result<RingBuf<MapData>> {
    let map = ebpf.take_map(MAP_EVENTS).context("no EVENTS map")?;
    Ok(RingBuf::try_from(map)?)
}

// --- P1: BPF_PROG_TEST_RUN ns/packet --------------------------------------------------------

struct P1Case {
    id: &'static str,
    measure: &'static str,
    frame: Vec<u8>,
    sampled: bool,
    /// true: target is a ratio; false: an absolute difference in ns.
    ratio_target: Option<f64>,
    diff_target: Option<f64>,
}

/// ns/packet for one test_run call: the calling thread's CPU time over the call divided
/// by `repeat` (sub-ns resolution), and the kernel's own (integer-truncated) figure.
fn test_run_ns(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(f64, u64)> {
    let c0 = thread_cpu_ns();
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    })?;
    let c1 = thread_cpu_ns();
    if r.return_value != 2 {
        bail!(
            "XDP program returned {} instead of XDP_PASS",
            r.return_value
        );
    }
    Ok((
        (c1 - c0) as f64 / f64::from(repeat),
        r.duration.as_nanos() as u64,
    ))
}

fn p1(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 5 } else { 15 };
    let repeat: u32 = 1_000_000;
    progress(format!(
        "P1: BPF_PROG_TEST_RUN, {rounds} interleaved rounds of {repeat} repeats per program and frame"
    ));
    let mut off = load_object(0)?;
    load_xdp(&mut off, PROG_XDP)?;
    load_xdp(&mut off, PROG_XDP_NOOP)?;
    let mut on = load_object(u32::MAX)?;
    load_xdp(&mut on, PROG_XDP)?;

    let ack = |f: Frame| {
        f.with_tcp(|t| {
            t.flags = TCP_ACK;
            t.window = 501;
            t.options = Tcp::timestamp_options(0x1234, 0x5678);
        })
        .build()
        .bytes
    };
    let rst = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    let cases = [
        P1Case {
            id: "P1a",
            measure: "test_run ns/packet, IPv4 TCP ACK (not RST)",
            frame: ack(Frame::tcp4(TCP_ACK)),
            sampled: false,
            ratio_target: Some(1.10),
            diff_target: None,
        },
        P1Case {
            id: "P1b",
            measure: "test_run ns/packet, 802.1Q VLAN + IPv6 TCP ACK (not RST)",
            frame: ack(Frame::tcp6(TCP_ACK).with_vlans(&[Vlan::dot1q(42)])),
            sampled: false,
            ratio_target: Some(1.10),
            diff_target: None,
        },
        P1Case {
            id: "P1c",
            measure: "test_run ns/packet, IPv4 RST, sampling off (counted only)",
            frame: rst.clone(),
            sampled: false,
            ratio_target: Some(1.25),
            diff_target: None,
        },
        P1Case {
            id: "P1d",
            measure: "test_run ns/packet, IPv4 RST, every one sampled into the ring buffer (drained by the daemon's drain loop)",
            frame: rst.clone(),
            sampled: true,
            ratio_target: None,
            diff_target: Some(40.0),
        },
    ];

    let drainer = Drainer::start(take_events(&mut on)?);
    let sampled0 = stat_sum(&on, STAT_WIRE_SAMPLED);
    let full0 = stat_sum(&on, STAT_WIRE_RING_FULL);

    let mut rows = Vec::new();
    let mut kernel_note = Vec::new();
    thread::scope(|s| -> anyhow::Result<()> {
        s.spawn(|| -> anyhow::Result<()> {
            pin(CPU_PACKETS);
            for c in &cases {
                let real = xdp(if c.sampled { &on } else { &off }, PROG_XDP);
                let noop = xdp(&off, PROG_XDP_NOOP);
                // Warm up both.
                test_run_ns(real, &c.frame, repeat / 10)?;
                test_run_ns(noop, &c.frame, repeat / 10)?;
                let (mut r, mut n, mut rk, mut nk) = (vec![], vec![], vec![], vec![]);
                for i in 0..rounds {
                    let order: [bool; 2] = if i % 2 == 0 {
                        [true, false]
                    } else {
                        [false, true]
                    };
                    for is_real in order {
                        let (ns, k) =
                            test_run_ns(if is_real { real } else { noop }, &c.frame, repeat)?;
                        if is_real {
                            r.push(ns);
                            rk.push(k as f64);
                        } else {
                            n.push(ns);
                            nk.push(k as f64);
                        }
                    }
                }
                let rs = summarize(&r);
                let ns = summarize(&n);
                let (ratio, target, pass) = if let Some(t) = c.ratio_target {
                    let q: Vec<f64> = r.iter().zip(&n).map(|(a, b)| a / b).collect();
                    let qs = summarize(&q);
                    (
                        format!("{:.2}× ({:.2}–{:.2})", qs.median, qs.min, qs.max),
                        format!("≤ {t:.2}×"),
                        qs.median <= t,
                    )
                } else {
                    let t = c.diff_target.unwrap_or(0.0);
                    let d: Vec<f64> = r.iter().zip(&n).map(|(a, b)| a - b).collect();
                    let ds = summarize(&d);
                    (
                        format!("+{:.1} ns ({:+.1}–{:+.1})", ds.median, ds.min, ds.max),
                        format!("≤ no-op + {t:.0} ns"),
                        ds.median <= t,
                    )
                };
                progress(format!(
                    "  {}: {:.1} ns vs no-op {:.1} ns → {ratio}",
                    c.id, rs.median, ns.median
                ));
                kernel_note.push(format!(
                    "{} {:.0}/{:.0}",
                    c.id,
                    summarize(&rk).median,
                    summarize(&nk).median
                ));
                rows.push(Row {
                    id: c.id,
                    measure: c.measure.to_string(),
                    value: rs.fmt(1, " ns"),
                    baseline: format!("no-op XDP {}", ns.fmt(1, " ns")),
                    ratio,
                    target,
                    pass: Some(pass),
                });
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow!("P1 thread panicked"))?
    })?;
    let attempted = wire_total(&on);
    let sampled = stat_sum(&on, STAT_WIRE_SAMPLED) - sampled0;
    let full = stat_sum(&on, STAT_WIRE_RING_FULL) - full0;
    let drained = drainer.stop()?;
    notes.push(format!(
        "P1d: of {attempted} RSTs run through the sampled program, {sampled} ({:.1} %) were \
         written to the ring buffer and {full} found it full (counted in \
         `rstmon_samples_dropped_total{{reason=\"ring_full\"}}`); the drain loop read {drained}.",
        100.0 * sampled as f64 / attempted as f64
    ));
    notes.push(format!(
        "P1 cross-check, the kernel's own integer `duration` (real/no-op, ns): {}.",
        kernel_note.join(", ")
    ));
    Ok(rows)
}

// --- P2: end-to-end packets/s through a veth pair --------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    NoXdp,
    Noop,
    Rstmon,
    Tcpdump,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::NoXdp,
        Variant::Noop,
        Variant::Rstmon,
        Variant::Tcpdump,
    ];
    fn label(self) -> &'static str {
        match self {
            Variant::NoXdp => "no XDP",
            Variant::Noop => "no-op XDP",
            Variant::Rstmon => "rstmon",
            Variant::Tcpdump => "tcpdump",
        }
    }
}

/// A running `tcpdump -w /dev/null` in a namespace; stopped (SIGINT) on drop.
struct Tcpdump {
    child: Child,
    stderr: mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Tcpdump {
    fn start(ns: &Ns, ifname: &str) -> anyhow::Result<Self> {
        let mut child = spawn_child(
            ns.command("taskset")
                .args([
                    "-c",
                    &CPU_CONSUMER.to_string(),
                    "tcpdump",
                    "-i",
                    ifname,
                    "-n",
                    "-w",
                    "/dev/null",
                    "tcp[tcpflags] & tcp-rst != 0",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .context("starting tcpdump (apt-get install tcpdump)")?;
        let err = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut t = Self {
            child,
            stderr: rx,
            lines: vec![],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let ready = l.contains("listening on");
                    t.lines.push(l);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                _ => bail!("tcpdump did not start: {}", t.lines.join(" / ")),
            }
        }
        Ok(t)
    }

    /// Stops it and returns its summary lines (captured / dropped by kernel).
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        forget_child(self.child.id() as i32);
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(l);
        }
        self.lines
            .iter()
            .filter(|l| l.contains("captured") || l.contains("dropped by kernel"))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        forget_child(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn p2(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let rounds = if o.quick { 5 } else { 9 };
    let warm = Duration::from_millis(300);
    let window = Duration::from_secs(1);
    progress(format!(
        "P2: veth pair, XDP_TX live-frames generator on every CPU → receiver's XDP → TCP \
         stack; {rounds} rounds × 4 variants, {:.0} s windows",
        window.as_secs_f64()
    ));
    let pair = Pair::new().context("creating the veth pair")?;
    // Every CPU generates and receives: the whole host is saturated, so whatever a
    // monitor costs, in the kernel or in user space, comes out of the packet rate.
    let cpus: Vec<usize> = (0..possible_cpus() as usize).collect();
    make_multiqueue(&pair, cpus.len())?;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_idx = pair.b.ifindex(&pair.b_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_000, TCP_RST | TCP_ACK);
    let gen_ = Generator::load().context("loading the XDP_TX generator")?;
    let raw = std::env::var("P2RAW").is_ok();
    let mut noop_obj = load_object(if raw { 10_000 } else { 0 })?;
    let noop_name = if raw { PROG_XDP } else { PROG_XDP_NOOP };
    load_xdp(&mut noop_obj, noop_name)?;

    // Check that frames arrive where they should, and calibrate the generator.
    let in0 = pair.b.run(tcp_mib)??;
    let (sent, el) = generate(
        &pair.a,
        &gen_,
        &frame,
        a_idx,
        0.0,
        Duration::from_millis(300),
        &cpus,
    )?;
    thread::sleep(Duration::from_millis(50));
    let in1 = pair.b.run(tcp_mib)??;
    if in1["InSegs"] == in0["InSegs"] {
        bail!("the generator's frames do not reach the receiver's TCP stack");
    }
    let fps = sent as f64 / el.as_secs_f64();
    // One live-frames call per CPU per measurement, long enough to cover the warm-up
    // and the window twice over even if the variant is much faster.
    let per_thread =
        ((2.0 * fps / cpus.len() as f64) * (warm + window).as_secs_f64()).max(1_000_000.0) as u32;

    let mut pps: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut loss_total = 0u64;
    let mut sent_total = 0u64;
    let mut csum_errors = 0u64;
    let mut short_windows = 0u32;
    let mut exact = Vec::new();
    let mut tcpdump_notes = Vec::new();
    for round in 0..rounds {
        for k in 0..4 {
            let v = Variant::ALL[(round + k) % 4];
            // Set up the variant.
            let mut noop_link = None;
            let mut mon = None;
            let mut dump = None;
            match v {
                Variant::NoXdp => {}
                Variant::Noop => {
                    let prog: &mut Xdp = noop_obj
                        .program_mut(noop_name)
                        .context("no-op program")?
                        .try_into()?;
                    let link = pair
                        .b
                        .run(|| prog.attach_to_if_index(b_idx, XdpMode::Driver))??;
                    noop_link = Some(link);
                }
                Variant::Rstmon => {
                    let iface = Iface {
                        name: pair.b_if.clone(),
                        ifindex: b_idx,
                        up: true,
                        loopback: false,
                    };
                    let cfg = Config {
                        interfaces: vec![iface],
                        max_samples_per_sec: DEFAULT_SAMPLES_PER_SEC,
                        wakeup_bytes: WAKEUP_BYTES,
                        xdp_mode: XdpModeArg::Native,
                    };
                    let m = pair.b.run(|| Monitor::start(&cfg))??;
                    let (programs, events, counters) = m.split();
                    mon = Some((programs, Drainer::start(events), counters));
                }
                Variant::Tcpdump => dump = Some(Tcpdump::start(&pair.b, &pair.b_if)?),
            }
            let before = pair.b.run(tcp_mib)??;
            let (sent, rate, full) =
                steady_pps(&pair, &gen_, &frame, a_idx, &cpus, per_thread, warm, window)?;
            thread::sleep(Duration::from_millis(30));
            let after = pair.b.run(tcp_mib)??;
            let recv = after["InSegs"] - before["InSegs"];
            csum_errors += after["InCsumErrors"] - before["InCsumErrors"];
            sent_total += sent;
            loss_total += sent.saturating_sub(recv);
            if !full {
                short_windows += 1;
            }
            pps.entry(v.label()).or_default().push(rate);
            // Tear down.
            if let Some(link) = noop_link {
                let prog: &mut Xdp = noop_obj
                    .program_mut(noop_name)
                    .context("no-op program")?
                    .try_into()?;
                prog.detach(link)?;
            }
            if let Some((programs, drainer, counters)) = mon {
                let snap = counters.snapshot(&programs.layout, &Default::default());
                let wire: u64 = snap.wire.values().sum();
                let delivered = drainer.stop()?;
                exact.push((
                    wire,
                    recv,
                    delivered,
                    snap.kernel.wire_sampled,
                    snap.kernel.wire_rate_limited,
                    snap.kernel.wire_ring_full,
                ));
                drop(programs);
            }
            if let Some(d) = dump {
                tcpdump_notes.push(d.stop());
            }
            progress(format!(
                "  round {}/{rounds} {:>9}: {} pps (sent {sent}, received {recv})",
                round + 1,
                v.label(),
                si(rate)
            ));
        }
    }
    let s = |v: Variant| summarize(&pps[v.label()]);
    let (none, noop, mon, dump) = (
        s(Variant::NoXdp),
        s(Variant::Noop),
        s(Variant::Rstmon),
        s(Variant::Tcpdump),
    );
    let paired = |base: Variant| -> Summary {
        let q: Vec<f64> = pps[Variant::Rstmon.label()]
            .iter()
            .zip(&pps[base.label()])
            .map(|(a, b)| a / b)
            .collect();
        summarize(&q)
    };
    let vs_noop = paired(Variant::Noop);
    let vs_dump = paired(Variant::Tcpdump);
    let vs_none = paired(Variant::NoXdp);
    let fmt_pps = |x: &Summary| {
        format!(
            "{} pps ({}–{}, n={})",
            si(x.median),
            si(x.min),
            si(x.max),
            x.n
        )
    };
    let measure = "end-to-end pps, IPv4 RST+ACK to a closed port: veth → XDP → TCP stack (rstmon = daemon's Monitor, default 20 000 samples/s, drained)";
    let rows = vec![
        Row {
            id: "P2",
            measure: measure.to_string(),
            value: fmt_pps(&mon),
            baseline: format!("no-op XDP {}", fmt_pps(&noop)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_noop.median, vs_noop.min, vs_noop.max
            ),
            target: "≥ 0.97× no-op".into(),
            pass: Some(vs_noop.median >= 0.97),
        },
        Row {
            id: "P2",
            measure: "same, against tcpdump -w /dev/null 'tcp[tcpflags] & tcp-rst != 0'".into(),
            value: fmt_pps(&mon),
            baseline: format!("tcpdump {}", fmt_pps(&dump)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_dump.median, vs_dump.min, vs_dump.max
            ),
            target: "≥ 1.3× tcpdump".into(),
            pass: Some(vs_dump.median >= 1.3),
        },
        Row {
            id: "P2",
            measure: "same, against no XDP program at all (GRO on, for reference)".into(),
            value: fmt_pps(&mon),
            baseline: format!("no XDP {}", fmt_pps(&none)),
            ratio: format!(
                "{:.3}× ({:.3}–{:.3})",
                vs_none.median, vs_none.min, vs_none.max
            ),
            target: "—".into(),
            pass: None,
        },
    ];
    let exact_ok = exact
        .iter()
        .all(|&(wire, recv, delivered, sampled, limited, full)| {
            wire == recv && sampled == delivered && sampled + limited + full == wire
        });
    notes.push(format!(
        "P2: generator calibrated at {} frames/s; {sent_total} frames sent in all, {loss_total} \
         not counted by the receiver's TCP (TcpInSegs; dropped at the veth ring when the \
         receiver is slower), {csum_errors} checksum errors, {short_windows} windows in which a \
         generator had already finished. rstmon rounds: wire counter == TcpInSegs \
         and sampled + rate-limited + ring-full == counted in every round: {} ({}).",
        si(fps),
        if exact_ok { "yes" } else { "NO" },
        exact
            .iter()
            .map(|(w, _, d, s, l, f)| format!(
                "{w} counted, {s} sampled/{d} drained, {l} rate-limited, {f} ring-full"
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    if !tcpdump_notes.is_empty() {
        notes.push(format!(
            "P2 tcpdump's own report per round: {}.",
            tcpdump_notes.join("; ")
        ));
    }
    Ok(rows)
}

/// Runs one live-frames call of `per_thread` frames on each CPU and reads the receiver's
/// TcpInSegs over `window` after `warm`, while every generator is still sending: call
/// set-up and tear-down stay outside the window. Returns (frames sent, pps in the window,
/// whether every generator was still running at the end of the window).
#[allow(clippy::too_many_arguments)]
fn steady_pps(
    pair: &Pair,
    gen_: &Generator,
    frame: &[u8],
    ifindex: u32,
    cpus: &[usize],
    per_thread: u32,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<(u64, f64, bool)> {
    thread::scope(|s| -> anyhow::Result<(u64, f64, bool)> {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> io::Result<Instant> {
                    pair.a.run(|| -> io::Result<()> {
                        pin(cpu);
                        gen_.send(frame, ifindex, per_thread)
                    })??;
                    Ok(Instant::now())
                })
            })
            .collect();
        thread::sleep(warm);
        let r0 = pair.b.run(tcp_mib)??["InSegs"];
        let t0 = Instant::now();
        thread::sleep(window);
        let r1 = pair.b.run(tcp_mib)??["InSegs"];
        let t1 = Instant::now();
        let mut full = true;
        for h in handles {
            let end = h.join().map_err(|_| anyhow!("generator panicked"))??;
            full &= end >= t1;
        }
        let pps = (r1 - r0) as f64 / (t1 - t0).as_secs_f64();
        Ok((u64::from(per_thread) * cpus.len() as u64, pps, full))
    })
}

// --- P3: highest lossless sampled RST rate ---------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Trial {
    stalled: bool,
    rate: f64,
    secs: f64,
    attempted: u64,
    counted: u64,
    sampled: u64,
    delivered: u64,
    ring_full: u64,
    rate_limited: u64,
}

impl Trial {
    fn lossless(&self) -> bool {
        self.ring_full == 0 && self.rate_limited == 0 && self.delivered == self.attempted
    }
    fn exact(&self) -> bool {
        self.counted == self.attempted
            && self.sampled == self.delivered
            && self.delivered + self.ring_full + self.rate_limited == self.attempted
    }
    fn achieved(&self) -> f64 {
        self.attempted as f64 / self.secs
    }
    fn line(&self) -> String {
        format!(
            "{}{} RST/s offered for {:.0} s (achieved {}): attempted {}, counted {}, delivered {} + ring-full {} + rate-limited {} = {} ({})",
            if self.stalled {
                "drain loop stalled, "
            } else {
                ""
            },
            si(self.rate),
            self.secs,
            si(self.achieved()),
            self.attempted,
            self.counted,
            self.delivered,
            self.ring_full,
            self.rate_limited,
            self.delivered + self.ring_full + self.rate_limited,
            if self.exact() { "exact" } else { "MISMATCH" }
        )
    }
}

/// Runs the real program with every RST sampled at `rate` per second (paced in 1 ms
/// slots) on one CPU, the daemon's drain loop on the other. `stalled`: the drain loop
/// only starts once the traffic is over, so that the ring buffer overflows.
fn p3_trial(rate: f64, secs: f64, stalled: bool) -> anyhow::Result<Trial> {
    let mut ebpf = load_object(u32::MAX)?;
    load_xdp(&mut ebpf, PROG_XDP)?;
    let mut events = Some(take_events(&mut ebpf)?);
    let early = if stalled {
        None
    } else {
        events.take().map(Drainer::start)
    };
    let frame = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    let prog = xdp(&ebpf, PROG_XDP);
    let (attempted, el) = thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(u64, f64)> {
            pin(CPU_PACKETS);
            let t0 = Instant::now();
            let mut done = 0u64;
            loop {
                let el = t0.elapsed().as_secs_f64();
                if el >= secs {
                    return Ok((done, el));
                }
                let due = (rate * el) as u64;
                if due > done {
                    let n = (due - done).min(50_000) as u32;
                    prog.test_run(TestRunOptions {
                        data_in: Some(&frame),
                        repeat: n,
                        ..TestRunOptions::new()
                    })?;
                    done += u64::from(n);
                } else {
                    thread::sleep(Duration::from_micros(200));
                }
            }
        })
        .join()
        .map_err(|_| anyhow!("generator panicked"))?
    })?;
    let drainer = match (early, events) {
        (Some(d), _) => d,
        (None, Some(ev)) => Drainer::start(ev),
        (None, None) => bail!("no ring buffer"),
    };
    let delivered = drainer.stop()?;
    Ok(Trial {
        stalled,
        rate,
        secs: el,
        attempted,
        counted: wire_total(&ebpf),
        sampled: stat_sum(&ebpf, STAT_WIRE_SAMPLED),
        delivered,
        ring_full: stat_sum(&ebpf, STAT_WIRE_RING_FULL),
        rate_limited: stat_sum(&ebpf, STAT_WIRE_RATE_LIMITED),
    })
}

fn p3(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let probe = if o.quick { 1.0 } else { 2.0 };
    let confirm = if o.quick { 3.0 } else { 10.0 };
    progress(format!(
        "P3: sampled RST rate search ({probe:.0} s probes, {confirm:.0} s confirmation)"
    ));
    let mut lo: Option<Trial> = None;
    let mut hi: Option<Trial> = None;
    let mut trials = Vec::new();
    let mut rate = 100_000.0;
    // Double until a probe loses samples or the generator cannot keep up.
    loop {
        let t = p3_trial(rate, probe, false)?;
        progress(format!("  probe {}", t.line()));
        trials.push(t);
        if !t.lossless() {
            hi = Some(t);
            break;
        }
        lo = Some(t);
        if t.achieved() < 0.9 * rate || rate >= 12_800_000.0 {
            break;
        }
        rate *= 2.0;
    }
    // Bisect between the last lossless and the first lossy rate.
    if let (Some(l), Some(h)) = (lo, hi) {
        let (mut l, mut h) = (l.rate, h.rate);
        for _ in 0..3 {
            let m = (l + h) / 2.0;
            let t = p3_trial(m, probe, false)?;
            progress(format!("  probe {}", t.line()));
            trials.push(t);
            if t.lossless() {
                l = m;
                lo = Some(t);
            } else {
                h = m;
                hi = Some(t);
            }
        }
    }
    // Confirm over the full duration, stepping down if needed.
    let mut best = None;
    let mut r = lo.map(|t| t.rate).unwrap_or(50_000.0);
    for _ in 0..4 {
        let t = p3_trial(r, confirm, false)?;
        progress(format!("  confirm {}", t.line()));
        trials.push(t);
        if t.lossless() {
            best = Some(t);
            break;
        }
        if hi.is_none_or(|h| t.rate < h.rate) {
            hi = Some(t);
        }
        r *= 0.85;
    }
    // Above it: loss must be fully accounted for. If the generator could not outrun the
    // drain loop, make loss happen by stalling the drain loop until the traffic is over.
    let above = match hi {
        Some(h) => p3_trial(h.rate, confirm, false)?,
        None => p3_trial(best.map(|b| b.rate).unwrap_or(r), confirm, true)?,
    };
    progress(format!("  above {}", above.line()));
    trials.push(above);
    let all_exact = trials.iter().all(Trial::exact);
    notes.push(format!(
        "P3 trials (each: fresh object, every RST sampled, daemon's drain loop and \
         64 KiB wakeup threshold): {}.",
        trials
            .iter()
            .map(Trial::line)
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let (value, pass) = match best {
        Some(b) => {
            let generator_bound = hi.is_none();
            (
                format!(
                    "{}{} samples/s lossless over {:.0} s{}",
                    if generator_bound { "≥ " } else { "" },
                    si(b.achieved()),
                    b.secs,
                    if generator_bound {
                        " (the generator's limit: no loss at any rate it reached)"
                    } else {
                        ""
                    }
                ),
                b.achieved() >= 200_000.0,
            )
        }
        None => ("no lossless rate found".to_string(), false),
    };
    Ok(vec![
        Row {
            id: "P3",
            measure: "highest sampled RST rate with zero loss over 10 s (one CPU producing, daemon drain loop on the other)".into(),
            value,
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≥ 200 k samples/s".into(),
            pass: Some(pass),
        },
        Row {
            id: "P3",
            measure: format!(
                "above it ({} RST/s offered{}): delivered + ring-full + rate-limited == attempted, exactly, in every trial",
                si(above.rate),
                if above.stalled { ", drain loop stalled until the traffic is over" } else { "" }
            ),
            value: format!(
                "{} + {} + {} = {} of {}",
                above.delivered,
                above.ring_full,
                above.rate_limited,
                above.delivered + above.ring_full + above.rate_limited,
                above.attempted
            ),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "exact".into(),
            pass: Some(all_exact),
        },
    ])
}

// --- P4: the daemon ------------------------------------------------------------------------

struct Daemon {
    child: Child,
    pid: i32,
}

impl Daemon {
    fn start(ns: &Ns, ifname: &str, port: u16, samples: u32) -> anyhow::Result<Self> {
        let bin = env!("CARGO_BIN_EXE_rstmon");
        let child = spawn_child(
            ns.command("taskset")
                .args([
                    "-c",
                    &CPU_CONSUMER.to_string(),
                    bin,
                    "--log",
                    "warn",
                    "run",
                    "-i",
                    ifname,
                    "--web.listen-address",
                    &format!("127.0.0.1:{port}"),
                    "--max-samples-per-sec",
                    &samples.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .context("starting rstmon")?;
        let pid = child.id() as i32;
        let mut d = Self { child, pid };
        // `ip netns exec` and `taskset` exec in place: wait for the pid to be rstmon.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "rstmon" {
                break;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                bail!("rstmon exited early: {st}");
            }
            if Instant::now() > deadline {
                bail!("pid {pid} never became rstmon (comm {comm:?})");
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Ready when its port accepts (a bare connect, no request).
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        loop {
            if ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())? {
                break;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                bail!("rstmon exited early: {st}");
            }
            if Instant::now() > deadline {
                bail!("rstmon did not start serving within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        d.pid = pid;
        Ok(d)
    }

    fn tasks(&self) -> Vec<PathBuf> {
        fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// CPU time over all threads (schedstat, ns).
    fn cpu_ns(&self) -> u64 {
        self.tasks()
            .iter()
            .filter_map(|t| fs::read_to_string(t.join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// utime + stime from /proc/PID/stat, in clock ticks.
    fn stat_ticks(&self) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the comm: state is index 0, utime 14th field → index 11.
        f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
    }

    /// (voluntary, involuntary) context switches over all threads.
    fn switches(&self) -> (u64, u64) {
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

    fn status_kib(&self, key: &str) -> u64 {
        fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// The daemon's WIRE_COUNTERS map, found through its own fds.
    fn wire_map(&self) -> anyhow::Result<PerCpuHashMap<MapData, WireKey, u64>> {
        for e in fs::read_dir(format!("/proc/{}/fdinfo", self.pid))?.flatten() {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let Some(id) = text
                .lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
            else {
                continue;
            };
            if MapInfo::from_id(id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned))
                .as_deref()
                == Some(MAP_WIRE_COUNTERS)
            {
                let map = Map::from_map_data(MapData::from_id(id)?)?;
                return Ok(PerCpuHashMap::try_from(map)?);
            }
        }
        bail!("rstmon has no {MAP_WIRE_COUNTERS} map open")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        forget_child(self.pid);
        // SAFETY: our own child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One scrape over a fresh connection: (latency, body).
fn scrape(port: u16) -> io::Result<(Duration, String)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let el = t.elapsed();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    if !text.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "scrape failed: {}",
            text.lines().next().unwrap_or("")
        )));
    }
    Ok((el, body))
}

fn metric(body: &str, prefix: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn p4(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let idle_secs = if o.quick { 4.0 } else { 10.0 };
    let load_rounds = if o.quick { 3 } else { 5 };
    let load_secs = 1.0;
    let load_rate = 200_000.0;
    let scrapes = if o.quick { 100 } else { 300 };
    progress("P4: the rstmon daemon in a namespace (XDP on its veth, tracepoints host-wide)");
    let pair = Pair::new().context("creating the veth pair")?;
    let a_idx = pair.a.ifindex(&pair.a_if)?;
    let b_mac = mac_of(&pair.b, &pair.b_if)?;
    let a_mac = mac_of(&pair.a, &pair.a_if)?;
    let port = 9745;
    let d = Daemon::start(&pair.b, &pair.b_if, port, 4_000_000)?;
    thread::sleep(Duration::from_secs(1));

    // Idle.
    progress(format!("  idle for {idle_secs:.0} s"));
    let (c0, k0, s0) = (d.cpu_ns(), d.stat_ticks(), d.switches());
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(idle_secs));
    let el = t0.elapsed().as_secs_f64();
    let (c1, k1, s1) = (d.cpu_ns(), d.stat_ticks(), d.switches());
    let idle_pct = (c1 - c0) as f64 / (el * 1e9) * 100.0;
    let wakeups = (s1.0 - s0.0) as f64 / el;
    let invol = (s1.1 - s0.1) as f64 / el;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let idle_pct_stat = (k1 - k0) as f64 / hz / el * 100.0;
    progress(format!(
        "  idle: {idle_pct:.4} % CPU, {wakeups:.1} wakeups/s"
    ));

    // Under load: CPU per drained event.
    let gen_ = Generator::load()?;
    let frame = rst_to(&pair, b_mac, a_mac, 40_001, TCP_RST);
    let mut per_event = Vec::new();
    let mut load_lines = Vec::new();
    for i in 0..load_rounds {
        let (_, b0) = pair.b.run(|| scrape(port))??;
        let r0 = metric(&b0, "rstmon_samples_received_total{source=\"wire\"}");
        let c0 = d.cpu_ns();
        let (sent, _) = generate(
            &pair.a,
            &gen_,
            &frame,
            a_idx,
            load_rate,
            Duration::from_secs_f64(load_secs),
            &[CPU_PACKETS],
        )?;
        // Longer than the drain timer, so everything sent has been drained.
        thread::sleep(Duration::from_millis(400));
        let c1 = d.cpu_ns();
        let (_, b1) = pair.b.run(|| scrape(port))??;
        let r1 = metric(&b1, "rstmon_samples_received_total{source=\"wire\"}");
        let drained = r1 - r0;
        let ns = (c1 - c0) as f64 / drained.max(1) as f64;
        per_event.push(ns);
        load_lines.push(format!("{sent} sent/{drained} drained"));
        progress(format!(
            "  load round {}/{load_rounds}: {drained} events drained, {ns:.0} ns CPU each",
            i + 1
        ));
    }

    // /metrics at ~2000 series: 500 interfaces' worth of wire keys.
    let mut wire = d.wire_map()?;
    let ones = vec![1u64; possible_cpus() as usize];
    for ifindex in 10_000u32..10_500 {
        for family in [rst_common::FAMILY_IPV4, rst_common::FAMILY_IPV6] {
            for ack in [0u8, 1] {
                let key = WireKey {
                    ifindex,
                    family,
                    ack,
                    _pad: [0; 2],
                };
                wire.insert(key, PerCpuValues::try_from(ones.clone())?, 0)?;
            }
        }
    }
    // What reading the map costs by itself, the way every scrape does first (batched).
    let t = Instant::now();
    let keys = rst_user::batch::percpu_sums(&wire, aya::util::nr_cpus().unwrap_or(1)).len();
    let map_read_ms = t.elapsed().as_secs_f64() * 1e3;
    let (_, body) = pair.b.run(|| scrape(port))??;
    let series = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    progress(format!(
        "  {scrapes} scrapes of /metrics at {series} series"
    ));
    let lat: Vec<f64> = pair.b.run(|| -> io::Result<Vec<f64>> {
        (0..scrapes)
            .map(|_| scrape(port).map(|(d, _)| d.as_secs_f64() * 1e3))
            .collect()
    })??;
    let p50 = percentile(&lat, 50.0);
    let p99 = percentile(&lat, 99.0);
    let lmax = percentile(&lat, 100.0);
    let rss = d.status_kib("VmRSS:") as f64 / 1024.0;
    let hwm = d.status_kib("VmHWM:") as f64 / 1024.0;
    drop(d);

    let pe = summarize(&per_event);
    notes.push(format!(
        "P4 idle: {:.4} % of a core by schedstat ({idle_pct_stat:.2} % by /proc/PID/stat ticks), \
         {wakeups:.1} voluntary + {invol:.1} involuntary context switches/s, over {el:.1} s; \
         the tracepoints are host-wide, so resets elsewhere on the host also wake it. \
         Under load ({}/s for {load_secs:.0} s per round): {}. /metrics: {series} series, \
         {} scrapes on fresh connections: p50 {p50:.2} ms, p99 {p99:.2} ms, max {lmax:.2} ms; \
         reading the {keys} per-CPU wire keys alone (BPF_MAP_LOOKUP_BATCH, as the daemon \
         does) took {map_read_ms:.2} ms from the benchmark process.",
        idle_pct,
        si(load_rate),
        load_lines.join(", "),
        lat.len()
    ));
    Ok(vec![
        Row {
            id: "P4",
            measure: format!("daemon idle CPU, {idle_secs:.0} s (sum of per-thread schedstat)"),
            value: format!("{idle_pct:.4} % of a core"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 0.1 %".into(),
            pass: Some(idle_pct <= 0.1),
        },
        Row {
            id: "P4",
            measure: "daemon idle wakeups/s (voluntary context switches, all threads)".into(),
            value: format!("{wakeups:.1}/s"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 10/s".into(),
            pass: Some(wakeups <= 10.0),
        },
        Row {
            id: "P4",
            measure: format!(
                "daemon CPU per drained event, {}/s sampled RSTs through the veth",
                si(load_rate)
            ),
            value: pe.fmt(0, " ns"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 300 ns".into(),
            pass: Some(pe.median <= 300.0),
        },
        Row {
            id: "P4",
            measure: "daemon RSS after load and scrapes (VmRSS; VmHWM = peak, at start-up)".into(),
            value: format!("{rss:.1} MiB (peak {hwm:.1} MiB)"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "≤ 25 MiB".into(),
            pass: Some(rss <= 25.0),
        },
        Row {
            id: "P4",
            measure: format!(
                "/metrics latency at {series} series, p99 of {} scrapes",
                lat.len()
            ),
            value: format!("p99 {p99:.2} ms (p50 {p50:.2}, max {lmax:.2})"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "p99 ≤ 5 ms".into(),
            pass: Some(p99 <= 5.0),
        },
    ])
}

// --- the document --------------------------------------------------------------------------

/// Everything after this line of docs/performance.md is rewritten by a full run; the
/// text above it (method, what each row means) is kept.
const RESULTS_MARKER: &str = "<!-- results: everything below is written by `cargo xtask bench` -->";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("rst-user lives in the workspace")
        .join("docs/performance.md")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let o = Opts::parse()?;
    progress("rstmon benchmarks (docs/performance.md)");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (BPF, network namespaces): run `cargo xtask bench`");
    }
    cleanup_on_signal();
    let stale = rst_user::netns::sweep_stale();
    if stale > 0 {
        progress(format!("removed {stale} namespaces left over by dead runs"));
    }
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    if o.wants("P1") {
        rows.extend(p1(&o, &mut notes)?);
    }
    if o.wants("P2") {
        rows.extend(p2(&o, &mut notes)?);
    }
    if o.wants("P3") {
        rows.extend(p3(&o, &mut notes)?);
    }
    if o.wants("P4") {
        rows.extend(p4(&o, &mut notes)?);
    }
    let env = format!(
        "{} · Linux {} · {}",
        today(),
        rst_user::kernel::release(),
        cpu_model()
    );
    let t = table(&rows);
    println!("\n{env}\n\n{t}");
    for n in &notes {
        println!("- {n}");
    }
    let total = T0.get().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    progress(format!("done in {total:.0} s"));
    if o.write && o.full() {
        let path = doc_path();
        let old = fs::read_to_string(&path).unwrap_or_default();
        let mut doc = match old.split_once(RESULTS_MARKER) {
            Some((head, _)) => head.to_string(),
            None if old.is_empty() => "# Performance\n\n".to_string(),
            None => format!("{}\n\n", old.trim_end()),
        };
        let _ = write!(
            doc,
            "{RESULTS_MARKER}\n\n## Results\n\nRun: {env}; whole run {total:.0} s.\n\n{t}\nNotes from this run:\n\n"
        );
        for n in &notes {
            let _ = writeln!(doc, "- {n}");
        }
        fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        progress(format!("wrote {}", path.display()));
    } else {
        progress("partial or --quick run: docs/performance.md not written");
    }
    Ok(())
}
