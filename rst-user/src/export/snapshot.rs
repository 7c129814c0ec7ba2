//! What one scrape reads: the exact counters of every source, the self-counters, and
//! the attach state at that moment.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, OwnedFd},
};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use rst_common::{RecvKey, STAT_COUNT, SendKey, Stat, WireKey};

use crate::{kernel::KernelLayout, sources, sys};

/// Counters kept by the kernel programs (the STATS map), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats(pub [u64; STAT_COUNT as usize]);

impl KernelStats {
    pub fn get(&self, s: Stat) -> u64 {
        self.0[s.index() as usize]
    }

    pub fn set(&mut self, s: Stat, v: u64) {
        self.0[s.index() as usize] = v;
    }
}

/// Counters kept by the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserStats {
    pub wire_received: u64,
    pub trace_received: u64,
    pub decode_errors: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sent: sources::sent::Counts,
    pub received: sources::received::Counts,
    pub wire: sources::wire::Counts,
    /// Monitored interfaces and their XDP mode (`native` or `generic`).
    pub interfaces: Vec<(String, String)>,
    /// Tracing hooks and whether rstmon holds a link for each.
    pub hooks: Vec<(String, bool)>,
    /// Tracing hooks and how often the kernel skipped them (recursion protection).
    pub hook_misses: Vec<(String, u64)>,
    /// Interfaces the controller left alone, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    pub kernel: KernelStats,
    pub user: UserStats,
    pub reason_supported: bool,
    pub version: String,
    pub kernel_release: String,
}

/// The exact counters, read at scrape time.
pub struct Counters {
    pub(crate) wire: PerCpuHashMap<MapData, WireKey, u64>,
    pub(crate) send: PerCpuHashMap<MapData, SendKey, u64>,
    pub(crate) recv: PerCpuHashMap<MapData, RecvKey, u64>,
    pub(crate) stats: PerCpuArray<MapData, u64>,
    /// Possible CPUs: the number of values of each per-CPU entry.
    pub(crate) ncpus: usize,
    /// The tracing programs, for their kernel-side miss counters.
    pub(crate) hook_fds: Vec<(String, OwnedFd)>,
}

impl Counters {
    /// Reads every counter map, summing per-CPU values, and classifies the keys. Wire
    /// counters are read for the interfaces in `ifnames` only.
    pub fn snapshot(&self, layout: &KernelLayout, ifnames: &BTreeMap<u32, String>) -> Snapshot {
        let mut snap = Snapshot {
            wire: sources::wire::collect(&self.wire, self.ncpus, ifnames),
            sent: sources::sent::collect(&self.send, self.ncpus, &layout.reasons),
            received: sources::received::collect(&self.recv, self.ncpus),
            ..Default::default()
        };
        for s in Stat::ALL {
            let v = self
                .stats
                .get(&s.index(), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0);
            snap.kernel.set(s, v);
        }
        snap.hook_misses = self
            .hook_fds
            .iter()
            .map(|(name, fd)| {
                let n = sys::bpf::recursion_misses(fd.as_fd()).unwrap_or(0);
                (name.clone(), n)
            })
            .collect();
        snap.reason_supported = layout.has_reason;
        snap
    }

    /// Removes every wire counter of `ifindex` (an interface that is gone), so that a
    /// new interface given the same index starts from zero.
    pub fn forget_interface(&mut self, ifindex: u32) {
        let keys: Vec<WireKey> = self
            .wire
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for k in keys {
            let _ = self.wire.remove(&k);
        }
    }
}
