//! Loading the eBPF object with this kernel's layout, and attaching the tracing hooks
//! (raw tracepoints: no tracefs, no record formatting in the kernel). XDP and TC
//! attachments are the [`super::controller`]'s.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray, RingBuf},
    programs::{
        ProgramError, RawTracePoint, SchedClassifier, Xdp, raw_trace_point::RawTracePointLinkId,
    },
    sys::SyscallError,
};
use rst_common::{
    MAP_EGRESS_ACTIVE, MAP_EGRESS_ORIGINS, MAP_EVENTS, MAP_FORWARDED, MAP_FORWARDED_UNATTRIBUTED,
    MAP_HISTOGRAMS, MAP_IFINDEX_SLOT, MAP_RECV_COUNTERS, MAP_SEND_COUNTERS, MAP_STATS,
    MAP_TC_SAMPLE, MAP_WIRE_COUNTERS, MAP_WIRE_SLOTS, MAP_WIRE_UNATTRIBUTED, MAP_WORKLOAD_COUNTERS,
    PROG_RECV_RESET, PROG_SEND_RESET, PROG_SET_STATE, PROG_TC, PROG_TC_SAMPLE, PROG_XDP,
    WIRE_SLOTS_DEFAULT, globals,
};
use tracing::{debug, warn};

use super::error::{LoadError, has_errno, one_line};
use crate::{
    export::snapshot::{Counters, EgressMaps, WireMaps},
    kernel::{self, KernelError, KernelLayout, RECV_RESET_TP, SEND_RESET_TP, SET_STATE_TP},
};

/// When set, the programs read each `sk_buff` and `tcp_sock` field on its own instead
/// of one window (`TraceOffsets::skb_win`, `tp_win`), as on a kernel whose fields lie
/// too far apart: how the tests reach that path. A testing aid, not a user setting.
pub const NO_SKB_WINDOW_ENV: &str = "RSTMON_TEST_NO_SKB_WINDOW";

/// The compiled eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rst-ebpf"));

/// Load-time settings of the kernel programs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Wire samples per second, over all CPUs; 0 turns wire sampling off.
    pub max_samples_per_sec: u32,
    /// Send/receive samples per second, over all CPUs; 0 turns them off, u32::MAX (the
    /// default) takes every one.
    pub max_trace_samples_per_sec: u32,
    /// Bytes of samples per forced consumer wakeup.
    pub wakeup_bytes: u32,
    /// Turn on the kernel programs' diagnostics (aya-log, debug level, target
    /// `rstmon::ebpf`); off, the verifier removes them.
    pub kernel_log: bool,
    /// Interfaces whose wire RSTs are counted in a slot of their own (the fast path);
    /// more interfaces than this are counted exactly on the overflow path.
    pub wire_slots: u32,
    /// Whether the kernel's `tcp_send_reset` fires for resets sent without a socket
    /// (Linux 6.10+; a SYN to a closed port, a segment for a lost connection). When
    /// false, the TC egress program counts the RSTs of the TCP stack's control socket
    /// that no tracepoint announced as sent resets, their cause from the wire
    /// (`EGRESS_STACK_UNTRACED`); when true it never does, so nothing counts twice.
    /// Set it from a kernel probe; the default (true) can never double count.
    pub send_reset_no_socket_traced: bool,
    /// Attach `inet_sock_set_state` to record the connect() and listen() callers and
    /// each connection's start (the process and age of later resets).
    pub track_connections: bool,
    /// Attach `skb:kfree_skb` to tell challenged RSTs and `alive_after_reset` (it runs
    /// for every packet the host drops).
    pub trace_drops: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_samples_per_sec: 0,
            max_trace_samples_per_sec: u32::MAX,
            wakeup_bytes: 64 * 1024,
            kernel_log: false,
            wire_slots: WIRE_SLOTS_DEFAULT,
            send_reset_no_socket_traced: true,
            track_connections: true,
            trace_drops: true,
        }
    }
}

/// Loaded programs with the tracing hooks attached. Dropping it detaches everything.
pub struct Programs {
    // Owns the programs and their links.
    ebpf: Ebpf,
    /// The tracing hooks, each with the link rstmon holds for it.
    hooks: Vec<(String, RawTracePointLinkId)>,
    xdp_loaded: bool,
    tc_loaded: bool,
    /// The kernel programs' log, when [`Config::kernel_log`] is on.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub layout: KernelLayout,
}

/// Loaded and attached programs, their ring buffer and their counters.
pub struct Monitor {
    pub programs: Programs,
    pub events: RingBuf<MapData>,
    pub counters: Counters,
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(|error| LoadError::Program { name, error })
}

/// A tracing program the kernel refused: EPERM names the capability missing, or what
/// else refused when none is (a seccomp filter, lockdown, a security module).
fn hook_error(name: &'static str, step: &str, error: ProgramError) -> LoadError {
    if has_errno(&error, &[libc::EPERM]) {
        LoadError::Kernel(KernelError::Denied {
            what: format!("{step} of eBPF program {name}"),
            error: one_line(&error),
            cause: kernel::caps::eperm_cause_here(&[
                kernel::caps::CAP_BPF,
                kernel::caps::CAP_PERFMON,
            ]),
        })
    } else {
        LoadError::Program { name, error }
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|error| LoadError::Map { name, error })
}

/// Number of possible CPUs (the number of values of each per-CPU map entry).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1).max(1)
}

impl Monitor {
    /// Probes the kernel, loads the object and attaches the tracing hooks. Any failure
    /// leaves nothing attached.
    pub fn start(cfg: &Config) -> Result<Self, LoadError> {
        // The BTF is read, indexed and freed before aya parses it again for itself.
        let layout = kernel::probe()?;
        Self::start_with(cfg, layout)
    }

    /// [`Monitor::start`] with the kernel already probed (`rstmon check` has done it).
    pub fn start_with(cfg: &Config, layout: KernelLayout) -> Result<Self, LoadError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let features = layout.features;
        if !features.ringbuf {
            return Err(LoadError::Kernel(KernelError::Unsupported(
                "BPF ring buffer",
            )));
        }
        if !layout.has_reason {
            warn!(
                "tcp_send_reset reports no reason on this kernel (no reason argument, or no \
                 enum sk_rst_reason in BTF): sent causes come from socket state and trigger \
                 only, the rest is reported as `other`"
            );
        }
        // The one place where the probe of tcp_send_reset's coverage reaches the loader:
        // before 6.10 the resets the stack sends without a full socket (S1, S4, S5, S6 on
        // the sending side) never fire it.
        let send_reset_no_socket_traced = layout.send_reset_no_socket_traced();
        if !send_reset_no_socket_traced {
            warn!(
                "tcp_send_reset does not fire for resets sent without a full socket on this \
                 kernel (before 6.10): resets answering a SYN to a closed port, a segment of \
                 an unknown connection or a time-wait socket are counted as sent only when \
                 they leave by a monitored interface, their cause from the wire"
            );
        }
        let slots = cfg.wire_slots.max(1);
        let log_level = if cfg.kernel_log {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let mut offsets = layout.offsets;
        if std::env::var_os(NO_SKB_WINDOW_ENV).is_some() {
            // The path of a kernel whose sk_buff fields lie too far apart.
            offsets.skb_win = rst_common::OFF_NONE;
            offsets.tp_win = rst_common::OFF_NONE;
        }
        // The object has no CO-RE relocations (offsets come from rstmon's own BTF probe
        // as globals): aya need not parse the kernel's BTF, most of start-up's peak memory.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global(aya_log::LEVEL, &log_level, false)
            .override_global(globals::TRACE_OFFSETS, &offsets, true)
            .override_global(
                globals::COARSE_CLOCK,
                &u32::from(features.coarse_clock),
                true,
            )
            .override_global(
                globals::WIRE_SAMPLES_PER_SEC,
                &cfg.max_samples_per_sec,
                true,
            )
            .override_global(
                globals::TRACE_SAMPLES_PER_SEC,
                &cfg.max_trace_samples_per_sec,
                true,
            )
            .map_max_entries(MAP_WIRE_SLOTS, slots)
            .override_global(globals::WAKEUP_BYTES, &cfg.wakeup_bytes, true)
            .override_global(
                globals::SEND_RESET_NO_SOCKET_TRACED,
                &u8::from(cfg.send_reset_no_socket_traced && send_reset_no_socket_traced),
                true,
            )
            .override_global(rst_common::GLOBAL_VERDICT_OFFSETS, &layout.verdict, true)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Load)?;
        // Before the programs load: they refer to the log map it takes over.
        let logger = if cfg.kernel_log {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!("kernel diagnostics unavailable: {e}");
                    None
                }
            }
        } else {
            None
        };

        let mut hooks = Vec::new();
        let mut hook_fds = Vec::new();
        let mut tracing = vec![
            (PROG_SEND_RESET, SEND_RESET_TP),
            (PROG_RECV_RESET, RECV_RESET_TP),
        ];
        if cfg.track_connections && layout.has_set_state {
            tracing.push((PROG_SET_STATE, SET_STATE_TP));
        } else if cfg.track_connections {
            warn!(
                "sock:inet_sock_set_state not usable on this kernel: resets name no connect()/listen() process and no connection age"
            );
        }
        // kfree_skb without a drop reason (before 5.17) tells no verdict: not attached.
        if !cfg.trace_drops {
            // --no-drop-tracing: said in its help and docs/classification.md.
        } else if kernel::verdict::tells_challenged(&layout.verdict) {
            tracing.push((rst_common::PROG_KFREE_SKB, kernel::verdict::KFREE_SKB_TP));
        } else {
            warn!(
                "skb:kfree_skb has no drop reason on this kernel (before 5.17): challenged RSTs count as ignored, alive_after_reset is never raised"
            );
        }
        for (name, tp) in tracing {
            let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|error| hook_error(name, "load", error))?;
            log_verified(name, prog.info());
            let link = prog
                .attach(tp)
                .map_err(|error| hook_error(name, "attach", error))?;
            // The label keeps the classic tracepoint's name (dashboards use it).
            let label = if tp == SET_STATE_TP {
                format!("sock:{tp}")
            } else if tp == kernel::verdict::KFREE_SKB_TP {
                format!("skb:{tp}")
            } else {
                format!("tcp:{tp}")
            };
            hooks.push((label.clone(), link));
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
                .map_err(|error| LoadError::Program { name, error })?;
            hook_fds.push((label, fd));
        }
        if layout.offsets.tp_saw_tstamp_bit == rst_common::OFF_NONE {
            warn!(
                "tcp_sock.rx_opt not found in BTF: received RSTs in established connections count as peer_abort"
            );
        }

        let counters = Counters {
            wire: WireMaps::new(
                take(&mut ebpf, MAP_WIRE_SLOTS)?,
                take(&mut ebpf, MAP_IFINDEX_SLOT)?,
                take(&mut ebpf, MAP_WIRE_COUNTERS)?,
                take(&mut ebpf, MAP_WIRE_UNATTRIBUTED)?,
            ),
            egress: EgressMaps {
                origins: take(&mut ebpf, MAP_EGRESS_ORIGINS)?,
                forwarded: take(&mut ebpf, MAP_FORWARDED)?,
                forwarded_unattributed: take(&mut ebpf, MAP_FORWARDED_UNATTRIBUTED)?,
            },
            send: take(&mut ebpf, MAP_SEND_COUNTERS)?,
            recv: take(&mut ebpf, MAP_RECV_COUNTERS)?,
            stats: take(&mut ebpf, MAP_STATS)?,
            workloads: take(&mut ebpf, MAP_WORKLOAD_COUNTERS)?,
            histograms: take(&mut ebpf, MAP_HISTOGRAMS)?,
            ncpus: possible_cpus() as usize,
            hook_fds,
            full_logged: Default::default(),
            verdicts: crate::sources::verdict::Maps::new(take(
                &mut ebpf,
                rst_common::MAP_VERDICT_COUNTERS,
            )?),
        };
        let events = take(&mut ebpf, MAP_EVENTS)?;
        Ok(Self {
            programs: Programs {
                ebpf,
                hooks,
                xdp_loaded: false,
                tc_loaded: false,
                logger,
                layout,
            },
            events,
            counters,
        })
    }

    pub fn split(self) -> (Programs, RingBuf<MapData>, Counters) {
        (self.programs, self.events, self.counters)
    }
}

impl Programs {
    /// The tracing hooks and whether rstmon holds a link for each: every hook in this
    /// list was attached, and stays attached while `self` lives.
    pub fn hooks(&self) -> Vec<(String, bool)> {
        self.hooks.iter().map(|(n, _)| (n.clone(), true)).collect()
    }

    /// The kernel programs' log, to be polled (see [`crate::drain::forward_kernel_log`]).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// The XDP program, loaded into the kernel on first use.
    pub fn xdp(&mut self) -> Result<&mut Xdp, LoadError> {
        let prog: &mut Xdp = program(&mut self.ebpf, PROG_XDP)?;
        if !self.xdp_loaded {
            prog.load().map_err(|error| LoadError::Program {
                name: PROG_XDP,
                error,
            })?;
            log_verified(PROG_XDP, prog.info());
            self.xdp_loaded = true;
        }
        Ok(prog)
    }

    /// The TC egress program, loaded into the kernel on first use.
    pub fn tc(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        let prog: &mut SchedClassifier = program(&mut self.ebpf, PROG_TC)?;
        if !self.tc_loaded {
            prog.load().map_err(|error| LoadError::Program {
                name: PROG_TC,
                error,
            })?;
            log_verified(PROG_TC, prog.info());
            install_tc_sampler(&mut self.ebpf)?;
            self.tc_loaded = true;
        }
        program(&mut self.ebpf, PROG_TC)
    }

    /// The kernel's id of the loaded XDP program (to tell it from someone else's).
    pub fn xdp_prog_id(&mut self) -> Option<u32> {
        self.xdp().ok()?.info().ok().map(|i| i.id())
    }
}

/// Logs (debug) how many instructions the verifier processed for a program it accepted:
/// how close the program is to the verifier's limit of 1 000 000 on older kernels.
fn log_verified(name: &str, info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>) {
    if let Some(n) = info.ok().and_then(|i| i.verified_instruction_count()) {
        debug!(program = name, verified_insns = n, "program verified");
    }
}

/// Loads the TC egress sampler and puts it into the program array `rstmon_tc`
/// tail-calls for each RST it samples: before `rstmon_tc` runs anywhere, or it takes no
/// samples.
pub fn install_tc_sampler(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    let sampler: &mut SchedClassifier = program(ebpf, PROG_TC_SAMPLE)?;
    let failed = |error| LoadError::Program {
        name: PROG_TC_SAMPLE,
        error,
    };
    sampler.load().map_err(failed)?;
    log_verified(PROG_TC_SAMPLE, sampler.info());
    let fd = sampler
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(failed)?;
    let map_failed = |error| LoadError::Map {
        name: MAP_TC_SAMPLE,
        error,
    };
    let map = ebpf
        .map_mut(MAP_TC_SAMPLE)
        .ok_or(LoadError::Missing(MAP_TC_SAMPLE))?;
    ProgramArray::try_from(map)
        .map_err(map_failed)?
        .set(0, &fd, 0)
        .map_err(map_failed)?;
    // From now on the send handler announces passive resets for rstmon_tc.
    let active = ebpf
        .map_mut(MAP_EGRESS_ACTIVE)
        .ok_or(LoadError::Missing(MAP_EGRESS_ACTIVE))?;
    aya::maps::Array::<_, u32>::try_from(active)
        .and_then(|mut a| a.set(0, 1, 0))
        .map_err(|error| LoadError::Map {
            name: MAP_EGRESS_ACTIVE,
            error,
        })
}

#[cfg(test)]
mod tests {
    /// The loader skips the kernel's BTF (`.btf(None)`): right only while the object has
    /// no CO-RE relocations for aya to resolve against it.
    #[test]
    fn object_needs_no_kernel_btf() {
        if super::EBPF_OBJECT.is_empty() {
            return; // AYA_BUILD_SKIP: no object to check.
        }
        let obj = aya_obj::Object::parse(super::EBPF_OBJECT).expect("the embedded object parses");
        assert!(
            !obj.has_btf_relocations(),
            "the eBPF object has CO-RE relocations: load it with the kernel's BTF"
        );
    }
}
