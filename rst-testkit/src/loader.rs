//! The embedded eBPF object as the tests and benchmarks load it: straight with aya,
//! without the daemon's kernel probing (no tracing program is loaded, so the trace
//! offsets are [`TraceOffsets::NONE`]), for BPF_PROG_TEST_RUN of the XDP and TC programs
//! and for reading and writing the maps directly.

use std::{fs, io};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
};
use rst_common::{
    MAP_IFINDEX_SLOT, MAP_STATS, MAP_WIRE_COUNTERS, MAP_WIRE_SLOTS, MAP_WIRE_UNATTRIBUTED, Stat,
    TraceOffsets, WireKey, globals,
};
pub use rst_user::attach::{EBPF_OBJECT, LoadError};

/// The daemon's own setting (`rstmon run`): a forced wakeup per 64 KiB of samples.
pub const WAKEUP_BYTES: u32 = 64 * 1024;
/// What an XDP program returns to let a frame through.
pub const XDP_PASS: u32 = 2;
/// What rstmon's TC programs return (`TC_ACT_UNSPEC`, -1: no verdict), as test runs
/// report it.
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// Panics unless the process runs as root (loading eBPF needs CAP_BPF and CAP_NET_ADMIN).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test loads eBPF and needs root (euid is {euid}); run it with sudo -E, \
         or through `cargo xtask test`"
    );
}

/// Panics if rst-user was built without its eBPF object (`AYA_BUILD_SKIP=1`).
pub fn require_object() {
    assert!(
        !EBPF_OBJECT.is_empty(),
        "rst-user was built with AYA_BUILD_SKIP=1: the eBPF object is a placeholder"
    );
}

/// The loopback's ifindex in the current network namespace: the ingress interface test
/// runs without a context see.
pub fn loopback_ifindex() -> u32 {
    let text =
        fs::read_to_string("/sys/class/net/lo/ifindex").expect("reading /sys/class/net/lo/ifindex");
    text.trim().parse().expect("parsing the loopback's ifindex")
}

/// [`EBPF_OBJECT`] loaded with `samples_per_sec` wire samples per second over all CPUs
/// (`0`: sampling off, `u32::MAX`: every RST sampled), [`WAKEUP_BYTES`], no trace
/// offsets and the kernel programs' diagnostics off (as `rstmon run` loads it by
/// default). No program is loaded into the kernel yet ([`load_xdp`]).
pub fn load_object(samples_per_sec: u32) -> Result<Ebpf, LoadError> {
    load_object_with(samples_per_sec, &[])
}

/// [`load_object`] with some maps resized: `(map name, max entries)`.
pub fn load_object_with(samples_per_sec: u32, sizes: &[(&str, u32)]) -> Result<Ebpf, LoadError> {
    load(samples_per_sec, sizes, true)
}

/// [`load_object`] with the wire sampler on the coarse clock (`coarse`, the object's
/// default) or on the precise one (what the daemon chooses on kernels before 5.11).
pub fn load_object_on_clock(samples_per_sec: u32, coarse: bool) -> Result<Ebpf, LoadError> {
    load(samples_per_sec, &[], coarse)
}

fn load(samples_per_sec: u32, sizes: &[(&str, u32)], coarse: bool) -> Result<Ebpf, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let coarse = u32::from(coarse);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(aya_log::LEVEL, &0u8, false)
        .override_global(globals::TRACE_OFFSETS, &TraceOffsets::NONE, true)
        .override_global(globals::WIRE_SAMPLES_PER_SEC, &samples_per_sec, true)
        .override_global(globals::WAKEUP_BYTES, &WAKEUP_BYTES, true)
        .override_global(globals::COARSE_CLOCK, &coarse, true);
    for (name, n) in sizes {
        loader.map_max_entries(name, *n);
    }
    loader.load(EBPF_OBJECT).map_err(LoadError::Load)
}

/// Gives `ifindex` wire slot `slot` (as the daemon's interface controller does), so that
/// its RSTs take the fast path. The slot's counters must be zero (a fresh object).
pub fn assign_slot(ebpf: &mut Ebpf, ifindex: u32, slot: u32) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(MAP_IFINDEX_SLOT)
        .ok_or(LoadError::Missing(MAP_IFINDEX_SLOT))?;
    let mut a: Array<&mut MapData, u32> = Array::try_from(map).map_err(|error| LoadError::Map {
        name: MAP_IFINDEX_SLOT,
        error,
    })?;
    a.set(ifindex, slot + 1, 0).map_err(|error| LoadError::Map {
        name: MAP_IFINDEX_SLOT,
        error,
    })
}

/// Loads the XDP program `name` of `ebpf` into the kernel (the verifier runs here).
pub fn load_xdp(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(|error| LoadError::Program { name, error })?;
    prog.load()
        .map_err(|error| LoadError::Program { name, error })?;
    if name == rst_common::PROG_TC {
        rst_user::attach::install_tc_sampler(ebpf)?;
    }
    Ok(())
}

/// The XDP program `name` of `ebpf`; panics if there is none ([`load_xdp`] it first to
/// run it).
pub fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .and_then(|p| <&Xdp>::try_from(p).ok())
        .unwrap_or_else(|| panic!("the object has no XDP program {name}"))
}

/// Loads the TC classifier `name` of `ebpf` into the kernel (the verifier runs here);
/// for `rstmon_tc`, its sampler too, as the daemon does.
pub fn load_tc(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(LoadError::Missing(name))?
        .try_into()
        .map_err(|error| LoadError::Program { name, error })?;
    prog.load()
        .map_err(|error| LoadError::Program { name, error })?;
    if name == rst_common::PROG_TC {
        rst_user::attach::install_tc_sampler(ebpf)?;
    }
    Ok(())
}

/// The TC classifier `name` of `ebpf`; panics if there is none ([`load_tc`] it first).
pub fn tc<'a>(ebpf: &'a Ebpf, name: &str) -> &'a SchedClassifier {
    ebpf.program(name)
        .and_then(|p| <&SchedClassifier>::try_from(p).ok())
        .unwrap_or_else(|| panic!("the object has no TC program {name}"))
}

/// One BPF_PROG_TEST_RUN of `prog` (XDP or TC) on `frame`: the program's return value.
pub fn test_run<P>(prog: &P, frame: &[u8]) -> Result<u32, ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let opts = TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::default()
    };
    prog.test_run(opts).map(|r| r.return_value)
}

/// Takes map `name` out of `ebpf` as a `T` (`RingBuf`, `PerCpuHashMap`, …).
pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|error| LoadError::Map { name, error })
}

/// A self-counter of the kernel programs, summed over CPUs (0 if the STATS map has been
/// taken out of `ebpf` or cannot be read).
pub fn stat_sum(ebpf: &Ebpf, stat: Stat) -> u64 {
    let Some(map) = ebpf.map(MAP_STATS) else {
        return 0;
    };
    PerCpuArray::<_, u64>::try_from(map)
        .ok()
        .and_then(|a| a.get(&stat.index(), 0).ok())
        .map(|v| v.iter().sum())
        .unwrap_or(0)
}

/// Every wire counter — slots, overflow map and unattributed — summed over keys and
/// CPUs (a map taken out of `ebpf` counts 0).
pub fn wire_total(ebpf: &Ebpf) -> u64 {
    let slots: u64 = ebpf
        .map(MAP_WIRE_SLOTS)
        .and_then(|m| PerCpuArray::<_, rst_common::WireSlot>::try_from(m).ok())
        .map_or(0, |a| {
            a.iter()
                .flatten()
                .map(|v| v.iter().flatten().sum::<u64>())
                .sum()
        });
    let arrays: u64 = slots
        + ebpf
            .map(MAP_WIRE_UNATTRIBUTED)
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
            .map_or(0, |a| {
                a.iter().flatten().map(|v| v.iter().sum::<u64>()).sum()
            });
    let overflow: u64 = ebpf
        .map(MAP_WIRE_COUNTERS)
        .and_then(|m| PerCpuHashMap::<_, WireKey, u64>::try_from(m).ok())
        .map(|m| m.iter().flatten().map(|(_, v)| v.iter().sum::<u64>()).sum())
        .unwrap_or(0);
    arrays + overflow
}

/// The map called `name` that process `pid` has open (found through its fds), opened
/// again by id: how a test or benchmark reaches a running daemon's maps.
pub fn map_of_process(pid: libc::pid_t, name: &str) -> io::Result<Map> {
    for e in fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
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
            == Some(name)
        {
            let data = MapData::from_id(id).map_err(io::Error::other)?;
            return Map::from_map_data(data).map_err(io::Error::other);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("process {pid} has no {name} map open"),
    ))
}

/// The wire counters of process `pid` (a running daemon), see [`map_of_process`].
pub fn wire_counters_of_process(
    pid: libc::pid_t,
) -> io::Result<PerCpuHashMap<MapData, WireKey, u64>> {
    PerCpuHashMap::try_from(map_of_process(pid, MAP_WIRE_COUNTERS)?).map_err(io::Error::other)
}

/// What the limit baselines (`rstmon_xdp_limit`, `rstmon_xdp_limit_vlan`) counted, per
/// [`rst_common::limit_index`], summed over CPUs (zeros if `ebpf` has no such map).
pub fn limit_counts(ebpf: &Ebpf) -> [u64; rst_common::LIMIT_COUNTS_ENTRIES as usize] {
    let mut out = [0u64; rst_common::LIMIT_COUNTS_ENTRIES as usize];
    let Some(a) = ebpf
        .map(rst_common::MAP_LIMIT_COUNTS)
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    else {
        return out;
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = a.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
    }
    out
}

/// Every count of the limit baselines, summed ([`limit_counts`]).
pub fn limit_total(ebpf: &Ebpf) -> u64 {
    limit_counts(ebpf).iter().sum()
}
