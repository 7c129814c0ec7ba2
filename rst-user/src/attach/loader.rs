//! Loading the eBPF object with this kernel's layout, and attaching the tracing hooks.
//! XDP attachments are the [`super::controller`]'s.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{ProgramError, TracePoint, Xdp, trace_point::TracePointLinkId},
    sys::SyscallError,
};
use rst_common::{
    MAP_EVENTS, MAP_RECV_COUNTERS, MAP_SEND_COUNTERS, MAP_STATS, MAP_WIRE_COUNTERS,
    PROG_RECV_RESET, PROG_SEND_RESET, PROG_XDP, globals,
};
use tracing::{info, warn};

use super::error::LoadError;
use crate::{
    export::snapshot::Counters,
    kernel::{self, KernelBtf, KernelLayout, Tracefs},
};

/// The compiled eBPF object, built by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rst-ebpf"));

/// Load-time settings of the kernel programs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Wire samples per second, over all CPUs; 0 turns wire sampling off.
    pub max_samples_per_sec: u32,
    /// Bytes of samples per forced consumer wakeup.
    pub wakeup_bytes: u32,
    /// Turn on the kernel programs' diagnostics (aya-log, debug level, target
    /// `rstmon::ebpf`); off, the verifier removes them.
    pub kernel_log: bool,
}

/// Loaded programs with the tracing hooks attached. Dropping it detaches everything.
pub struct Programs {
    // Owns the programs and their links.
    ebpf: Ebpf,
    /// The tracing hooks, each with the link rstmon holds for it.
    hooks: Vec<(String, TracePointLinkId)>,
    xdp_loaded: bool,
    /// The kernel programs' log, when [`Config::kernel_log`] is on.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub layout: KernelLayout,
    pub tracefs: Tracefs,
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

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|error| LoadError::Map { name, error })
}

/// Number of possible CPUs (the per-CPU token buckets divide the rate by it).
pub fn possible_cpus() -> u32 {
    aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1).max(1)
}

impl Monitor {
    /// Probes the kernel, loads the object and attaches the tracing hooks. Any failure
    /// leaves nothing attached.
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
        let log_level = if cfg.kernel_log {
            aya_log::Level::Debug as u8
        } else {
            0
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, false)
            .override_global(globals::TRACE_OFFSETS, &layout.offsets, true)
            .override_global(globals::WIRE_SAMPLES_PER_SEC, &per_cpu, true)
            .override_global(globals::WAKEUP_BYTES, &cfg.wakeup_bytes, true)
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
        for (name, tp) in [
            (PROG_SEND_RESET, "tcp_send_reset"),
            (PROG_RECV_RESET, "tcp_receive_reset"),
        ] {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|error| LoadError::Program { name, error })?;
            let link = prog
                .attach("tcp", tp)
                .map_err(|error| LoadError::Program { name, error })?;
            hooks.push((format!("tcp:{tp}"), link));
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
            hook_fds.push((format!("tcp:{tp}"), fd));
        }
        if layout.offsets.tp_saw_tstamp_bit == rst_common::OFF_NONE {
            warn!(
                "tcp_sock.rx_opt not found in BTF: received RSTs in established connections count as peer_abort"
            );
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
        Ok(Self {
            programs: Programs {
                ebpf,
                hooks,
                xdp_loaded: false,
                logger,
                layout,
                tracefs,
            },
            events,
            counters,
        })
    }

    /// Says what start-up changed on the system; called once everything worked, so that
    /// a failure stays a single line.
    pub fn report_changes(&self) {
        if self.programs.tracefs.mounted_now {
            info!(path = %self.programs.tracefs.path.display(), "tracefs was not mounted; mounted it");
        }
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
            self.xdp_loaded = true;
        }
        Ok(prog)
    }

    /// The kernel's id of the loaded XDP program (to tell it from someone else's).
    pub fn xdp_prog_id(&mut self) -> Option<u32> {
        self.xdp().ok()?.info().ok().map(|i| i.id())
    }
}
