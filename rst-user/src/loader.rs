//! Loading the eBPF object, attaching it, and reading its counters.

use std::{
    collections::BTreeMap,
    fmt, io,
    os::fd::{AsFd as _, OwnedFd},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{TracePoint, Xdp, XdpMode},
    sys::SyscallError,
};
use rst_common::{
    MAP_EVENTS, MAP_RECV_COUNTERS, MAP_SEND_COUNTERS, MAP_STATS, MAP_WIRE_COUNTERS,
    PROG_RECV_RESET, PROG_SEND_RESET, PROG_XDP, RecvKey, STAT_COUNTER_MAP_FULL, STAT_READ_ERRORS,
    STAT_TRACE_RING_FULL, STAT_TRACE_SAMPLED, STAT_WIRE_RATE_LIMITED, STAT_WIRE_RING_FULL,
    STAT_WIRE_SAMPLED, SendKey, WireKey, globals,
};
use tracing::{info, warn};

use crate::{
    batch,
    classify::{self, Family},
    ifaces::Iface,
    kernel::{self, KernelBtf, KernelLayout, Tracefs},
    metrics::{KernelStats, Snapshot},
    sys,
};

/// The compiled eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rst-ebpf"));

/// Why [`Monitor::start`] failed. It displays as ONE line, because the daemon prints it as
/// its only output: wrapped aya and kernel errors are flattened by [`one_line`] into the
/// message, so `source()` does not expose them again (a chain printer such as anyhow's
/// `{:#}` would repeat them, verifier log included). `{:?}` keeps everything.
#[derive(Debug)]
pub enum LoadError {
    NoObject,
    Kernel(kernel::KernelError),
    Load(aya::EbpfError),
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    Missing(&'static str),
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    XdpBusy(String),
    XdpAttach {
        iface: String,
        source: aya::programs::ProgramError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoObject => f.write_str(
                "this rstmon was built without its eBPF object (AYA_BUILD_SKIP); rebuild it normally",
            ),
            Self::Kernel(e) => f.write_str(&one_line(e)),
            Self::Load(e) => write!(f, "loading the eBPF object: {}", one_line(e)),
            Self::Program { name, source } => write!(f, "eBPF program {name}: {}", one_line(source)),
            Self::Missing(what) => write!(f, "eBPF object has no {what}"),
            Self::Map { name, source } => write!(f, "map {name}: {}", one_line(source)),
            Self::XdpBusy(i) => write!(
                f,
                "interface {i} already has an XDP program attached; rstmon never replaces one \
                 (see `ip link show {i}`, detach it with `ip link set dev {i} xdp off` if it is not needed)"
            ),
            Self::XdpAttach { iface, source } => {
                write!(f, "attaching XDP to {iface}: {}", one_line(source))?;
                if has_errno(source, &[libc::EOPNOTSUPP]) {
                    f.write_str(" (no native XDP on this interface; use --xdp-mode auto or generic)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl From<kernel::KernelError> for LoadError {
    fn from(e: kernel::KernelError) -> Self {
        Self::Kernel(e)
    }
}

/// Longest [`one_line`] rendering, in characters.
const ONE_LINE_MAX: usize = 300;
/// How aya (ProgramError/BtfError::LoadError) appends the kernel verifier log.
const VERIFIER_OUTPUT: &str = ". Verifier output: ";

/// Renders `err` and its sources as one line: each level once (aya errors often repeat
/// their source in their own message), a verifier log reduced to its verdict line,
/// newlines folded, at most [`ONE_LINE_MAX`] characters.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = fold_one_level(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    let line = parts.join(": ");
    match line.char_indices().nth(ONE_LINE_MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn fold_one_level(text: &str) -> String {
    let (head, log) = match text.split_once(VERIFIER_OUTPUT) {
        Some((head, log)) => (head, Some(log)),
        None => (text, None),
    };
    let mut out = head.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(log) = log {
        // The verdict is the last line before the statistics the kernel appends.
        let verdict = log.lines().map(str::trim).rfind(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        });
        match verdict {
            Some(v) => {
                out.push_str("; verifier: ");
                out.push_str(&v.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            None => out.push_str("; the verifier gave no log"),
        }
    }
    out
}

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic mode where the driver has none.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub interfaces: Vec<Iface>,
    /// Wire samples per second, over all CPUs; 0 turns wire sampling off.
    pub max_samples_per_sec: u32,
    pub wakeup_bytes: u32,
    pub xdp_mode: XdpModeArg,
}

#[derive(Clone, Debug)]
pub struct Attached {
    pub iface: Iface,
    pub mode: &'static str,
}

/// The exact counters, read at scrape time.
pub struct Counters {
    wire: PerCpuHashMap<MapData, WireKey, u64>,
    send: PerCpuHashMap<MapData, SendKey, u64>,
    recv: PerCpuHashMap<MapData, RecvKey, u64>,
    stats: PerCpuArray<MapData, u64>,
    /// Possible CPUs: the number of values of each per-CPU entry.
    ncpus: usize,
    /// The tracing programs, for their kernel-side miss counters.
    hook_fds: Vec<(String, OwnedFd)>,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Monitor {
    pub programs: Programs,
    pub events: RingBuf<MapData>,
    pub counters: Counters,
}

/// The part of a [`Monitor`] that keeps programs attached: drop it to detach.
pub struct Programs {
    // Owns the programs and their links.
    _ebpf: Ebpf,
    pub attached: Vec<Attached>,
    pub hooks: Vec<(String, bool)>,
    pub layout: KernelLayout,
    pub tracefs: Tracefs,
}

fn has_errno(err: &(dyn std::error::Error + 'static), codes: &[i32]) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let errno = if let Some(io) = e.downcast_ref::<io::Error>() {
            io.raw_os_error()
        } else if let Some(nl) = e.downcast_ref::<aya::sys::NetlinkError>() {
            // The legacy netlink attach path (kernels without XDP links).
            nl.raw_os_error()
        } else if let Some(aya::programs::ProgramError::SyscallError(s)) =
            e.downcast_ref::<aya::programs::ProgramError>()
        {
            s.io_error.raw_os_error()
        } else {
            None
        };
        if errno.is_some_and(|c| codes.contains(&c)) {
            return true;
        }
        cur = e.source();
    }
    false
}

fn attach_xdp(prog: &mut Xdp, iface: &Iface, mode: XdpModeArg) -> Result<&'static str, LoadError> {
    let busy = |e: &aya::programs::ProgramError| has_errno(e, &[libc::EBUSY, libc::EEXIST]);
    let wrap = |source| LoadError::XdpAttach {
        iface: iface.name.clone(),
        source,
    };
    let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach_to_if_index(iface.ifindex, m);
    let fail = |e| {
        if busy(&e) {
            LoadError::XdpBusy(iface.name.clone())
        } else {
            wrap(e)
        }
    };
    match mode {
        XdpModeArg::Native => try_mode(prog, XdpMode::Driver)
            .map(|_| "native")
            .map_err(fail),
        XdpModeArg::Generic => try_mode(prog, XdpMode::Skb)
            .map(|_| "generic")
            .map_err(fail),
        XdpModeArg::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(_) => Ok("native"),
            Err(e) if busy(&e) => Err(LoadError::XdpBusy(iface.name.clone())),
            Err(e) => {
                info!(
                    interface = %iface.name,
                    "native XDP unavailable ({e}); using generic (skb) mode"
                );
                try_mode(prog, XdpMode::Skb)
                    .map(|_| "generic")
                    .map_err(fail)
            }
        },
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Number of possible CPUs (the per-CPU token buckets divide the rate by it).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1).max(1)
}

impl Monitor {
    /// Probes the kernel, loads the object and attaches XDP to `cfg.interfaces` and the
    /// tracing hooks. Any failure leaves nothing attached.
    pub fn start(cfg: &Config) -> Result<Self, LoadError> {
        let tracefs = kernel::ensure_tracefs()?;
        let layout = kernel::probe_layout(&tracefs.path, &KernelBtf::load()?)?;
        Self::start_with(cfg, tracefs, layout)
    }

    /// [`Monitor::start`] with the kernel already probed (`rstmon check` has done it).
    pub fn start_with(
        cfg: &Config,
        tracefs: Tracefs,
        layout: KernelLayout,
    ) -> Result<Self, LoadError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        if !layout.has_reason {
            warn!(
                "tcp:tcp_send_reset has no reason field on this kernel (< 6.10): sent causes \
                 come from socket state and trigger only, the rest is reported as `other`"
            );
        }
        let per_cpu = match cfg.max_samples_per_sec {
            0 => 0,
            u32::MAX => u32::MAX,
            n => n.div_ceil(possible_cpus()).max(1),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::TRACE_OFFSETS, &layout.offsets, true)
            .override_global(globals::WIRE_SAMPLES_PER_SEC, &per_cpu, true)
            .override_global(globals::WAKEUP_BYTES, &cfg.wakeup_bytes, true)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Load)?;

        let mut hooks = Vec::new();
        let mut hook_fds = Vec::new();
        for (name, tp) in [
            (PROG_SEND_RESET, "tcp_send_reset"),
            (PROG_RECV_RESET, "tcp_receive_reset"),
        ] {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| LoadError::Program { name, source })?;
            prog.attach("tcp", tp)
                .map_err(|source| LoadError::Program { name, source })?;
            hooks.push((format!("tcp:{tp}"), true));
            let fd = prog
                .fd()
                .and_then(|fd| {
                    fd.as_fd().try_clone_to_owned().map_err(|io_error| {
                        SyscallError {
                            call: "dup",
                            io_error,
                        }
                        .into()
                    })
                })
                .map_err(|source| LoadError::Program { name, source })?;
            hook_fds.push((format!("tcp:{tp}"), fd));
        }
        if layout.offsets.tp_saw_tstamp_bit == rst_common::OFF_NONE {
            warn!(
                "tcp_sock.rx_opt not found in BTF: received RSTs in established connections count as peer_abort"
            );
        }

        let mut attached = Vec::new();
        if !cfg.interfaces.is_empty() {
            let prog: &mut Xdp = program(&mut ebpf, PROG_XDP)?;
            prog.load().map_err(|source| LoadError::Program {
                name: PROG_XDP,
                source,
            })?;
            for iface in &cfg.interfaces {
                let mode = attach_xdp(prog, iface, cfg.xdp_mode)?;
                info!(interface = %iface.name, ifindex = iface.ifindex, mode, "XDP attached");
                attached.push(Attached {
                    iface: iface.clone(),
                    mode,
                });
            }
        }

        let counters = Counters {
            wire: take(&mut ebpf, MAP_WIRE_COUNTERS)?,
            send: take(&mut ebpf, MAP_SEND_COUNTERS)?,
            recv: take(&mut ebpf, MAP_RECV_COUNTERS)?,
            stats: take(&mut ebpf, MAP_STATS)?,
            ncpus: possible_cpus() as usize,
            hook_fds,
        };
        let events = take(&mut ebpf, MAP_EVENTS)?;
        // Said once everything worked, so that a failure stays a single line.
        if tracefs.mounted_now {
            info!(path = %tracefs.path.display(), "tracefs was not mounted; mounted it");
        }
        Ok(Self {
            programs: Programs {
                _ebpf: ebpf,
                attached,
                hooks,
                layout,
                tracefs,
            },
            events,
            counters,
        })
    }

    pub fn split(self) -> (Programs, RingBuf<MapData>, Counters) {
        (self.programs, self.events, self.counters)
    }

    /// ifindex → name of the monitored interfaces.
    pub fn ifnames(&self) -> BTreeMap<u32, String> {
        self.programs
            .attached
            .iter()
            .map(|a| (a.iface.ifindex, a.iface.name.clone()))
            .collect()
    }
}

impl Counters {
    /// Reads every counter map, summing per-CPU values, and classifies the keys.
    pub fn snapshot(&self, layout: &KernelLayout, ifnames: &BTreeMap<u32, String>) -> Snapshot {
        let mut snap = Snapshot::default();
        for (k, v) in batch::percpu_sums(&self.wire, self.ncpus) {
            let Some(fam) = Family::from_raw(k.family) else {
                continue;
            };
            let iface = ifnames
                .get(&k.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", k.ifindex));
            let flags = if k.ack != 0 { "rst_ack" } else { "rst" };
            *snap.wire.entry((iface, fam, flags)).or_default() += v;
        }
        for (k, v) in batch::percpu_sums(&self.send, self.ncpus) {
            let Some(fam) = Family::from_raw(k.family) else {
                continue;
            };
            let cause = classify::classify_send_key(&layout.reasons, &k);
            *snap.sent.entry((cause, fam)).or_default() += v;
        }
        for (k, v) in batch::percpu_sums(&self.recv, self.ncpus) {
            let Some(fam) = Family::from_raw(k.family) else {
                continue;
            };
            let cause = classify::classify_recv(&k);
            *snap.received.entry((cause, fam)).or_default() += v;
        }
        let stat = |i: u32| -> u64 { self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        snap.kernel = KernelStats {
            wire_ring_full: stat(STAT_WIRE_RING_FULL),
            wire_rate_limited: stat(STAT_WIRE_RATE_LIMITED),
            trace_ring_full: stat(STAT_TRACE_RING_FULL),
            wire_sampled: stat(STAT_WIRE_SAMPLED),
            trace_sampled: stat(STAT_TRACE_SAMPLED),
            counter_map_full: stat(STAT_COUNTER_MAP_FULL),
            read_errors: stat(STAT_READ_ERRORS),
        };
        snap.hook_misses = self
            .hook_fds
            .iter()
            .map(|(name, fd)| (name.clone(), sys::recursion_misses(fd.as_fd()).unwrap_or(0)))
            .collect();
        snap.reason_supported = layout.has_reason;
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An aya-like error: its message repeats its source, and may carry a verifier log.
    #[derive(Debug)]
    struct Fake(String, io::Error);

    impl fmt::Display for Fake {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Fake {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn verifier_log_becomes_its_verdict_on_one_line() {
        let io = io::Error::from_raw_os_error(libc::EACCES);
        let msg = format!(
            "the BPF_PROG_LOAD syscall returned {io}. Verifier output: 0: R1=ctx() R10=fp0\n\
             0: (61) r2 = *(u32 *)(r1 +4)\n1: (71) r3 = *(u8 *)(r2 +0)\n\
             R2 invalid mem access 'scalar'\nprocessed 2 insns (limit 1000000) max_states_per_insn 0\n\
             verification time 17 usec\nstack depth 0\n"
        );
        let got = one_line(&Fake(msg, io));
        assert!(!got.contains('\n'), "{got}");
        assert_eq!(
            got,
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13); \
             verifier: R2 invalid mem access 'scalar'"
        );
    }

    #[test]
    fn each_cause_once_and_capped() {
        let e = aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
        let err = LoadError::XdpAttach {
            iface: "lo".into(),
            source: e,
        };
        assert_eq!(
            err.to_string(),
            "attaching XDP to lo: `bpf_link_create` failed: Operation not supported (os error 95) \
             (no native XDP on this interface; use --xdp-mode auto or generic)"
        );
        assert!(std::error::Error::source(&err).is_none());
        let long = Fake("x\n".repeat(1000), io::Error::other("y"));
        let got = one_line(&long);
        assert!(!got.contains('\n'));
        assert_eq!(got.chars().count(), ONE_LINE_MAX + 1, "{got}");
    }
}
