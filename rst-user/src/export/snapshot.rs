//! What one scrape reads: the exact counters of every source, the self-counters, and
//! the attach state at that moment.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use rst_common::{
    IFINDEX_SLOT_ENTRIES, RecvKey, STAT_COUNT, SendKey, Stat, WireKey, WireSlot, WorkloadKey,
};
use tracing::{debug, warn};

use super::iftable::IfaceTable;
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
    pub verdict_received: u64,
    pub decode_errors: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sent: sources::sent::Counts,
    pub received: sources::received::Counts,
    pub wire: sources::wire::Counts,
    /// Wire RSTs no interface could be told for (every slot and the overflow map full).
    pub wire_unattributed: sources::wire::Unattributed,
    /// Who made the RSTs that left (TC egress), forwarded ones per interface.
    pub egress: sources::egress::Counts,
    /// The monitored interfaces (XDP mode, TC egress mode) and the text of their
    /// series; the per-interface counts are aligned with its interfaces.
    pub ifaces: Arc<IfaceTable>,
    /// Tracing hooks and whether rstmon holds a link for each.
    pub hooks: Vec<(String, bool)>,
    /// Tracing hooks and how often the kernel skipped them (recursion protection).
    pub hook_misses: Vec<(String, u64)>,
    /// Interfaces the controller left alone, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    pub kernel: KernelStats,
    pub user: UserStats,
    pub reason_supported: bool,
    /// Exact per-workload counters as the kernel keys them (cgroup, netns, side, key).
    pub workload_raw: Vec<(WorkloadKey, u64)>,
    /// The same, classified and named (filled in by the exporter, which has the names).
    pub workloads: sources::workload::Counts,
    pub histograms: sources::workload::Histograms,
    /// Verdicts and signals per interface (`ignored` derived), aligned with `ifaces`.
    pub verdicts: sources::verdict::Rows,
    pub version: String,
    /// Git revision of the build (`rstmon_build_info`).
    pub revision: String,
    /// `rustc --version` of the build.
    pub rustc: String,
    pub kernel_release: String,
    /// `uname -v` (`rstmon_kernel_info`).
    pub kernel_version: String,
}

/// The wire counters' maps and who has which slot.
pub struct WireMaps {
    /// `WIRE_SLOTS`: one [`WireSlot`] per slot.
    pub(crate) slots: PerCpuArray<MapData, WireSlot>,
    /// `IFINDEX_SLOT`: ifindex → slot + 1.
    pub(crate) ifindex_slot: Array<MapData, u32>,
    /// `WIRE_COUNTERS`: the overflow path, by [`WireKey`].
    pub(crate) overflow: PerCpuHashMap<MapData, WireKey, u64>,
    /// `WIRE_UNATTRIBUTED`: what neither a slot nor the overflow map could hold.
    pub(crate) unattributed: PerCpuArray<MapData, u64>,
    /// ifindex → slot, of the interfaces that have one.
    pub(crate) assigned: BTreeMap<u32, u32>,
    pub(crate) free: BTreeSet<u32>,
}

impl WireMaps {
    pub(crate) fn new(
        slots: PerCpuArray<MapData, WireSlot>,
        ifindex_slot: Array<MapData, u32>,
        overflow: PerCpuHashMap<MapData, WireKey, u64>,
        unattributed: PerCpuArray<MapData, u64>,
    ) -> Self {
        let nslots = slots.len();
        Self {
            slots,
            ifindex_slot,
            overflow,
            unattributed,
            assigned: BTreeMap::new(),
            free: (0..nslots).collect(),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.slots.len()
    }
}

/// The egress attribution maps (TC).
pub struct EgressMaps {
    /// `EGRESS_ORIGINS`: by origin, family and flags.
    pub(crate) origins: PerCpuArray<MapData, u64>,
    /// `FORWARDED`: per outgoing interface and family.
    pub(crate) forwarded: PerCpuHashMap<MapData, WireKey, u64>,
    /// `FORWARDED_UNATTRIBUTED`: per family.
    pub(crate) forwarded_unattributed: PerCpuArray<MapData, u64>,
}

/// The exact counters, read at scrape time.
pub struct Counters {
    pub(crate) wire: WireMaps,
    pub(crate) egress: EgressMaps,
    pub(crate) send: PerCpuHashMap<MapData, SendKey, u64>,
    pub(crate) recv: PerCpuHashMap<MapData, RecvKey, u64>,
    pub(crate) stats: PerCpuArray<MapData, u64>,
    /// `WORKLOAD_COUNTERS`: exact resets by cgroup, namespace, side and key.
    pub(crate) workloads: sources::workload::Maps,
    /// `HISTOGRAMS`: idle and age, per side.
    pub(crate) histograms: PerCpuArray<MapData, u64>,
    /// Possible CPUs: the number of values of each per-CPU entry.
    pub(crate) ncpus: usize,
    /// The tracing programs, for their kernel-side miss counters.
    pub(crate) hook_fds: Vec<(String, OwnedFd)>,
    /// Whether a full counter map was logged already (it is logged once).
    pub(crate) full_logged: AtomicBool,
    /// `VERDICT_COUNTERS`.
    pub(crate) verdicts: sources::verdict::Maps,
}

impl Counters {
    /// Reads every counter map, summing per-CPU values, and classifies the keys. Wire
    /// and forwarded counters are read for the interfaces of `ifaces` only.
    pub fn snapshot(&self, layout: &KernelLayout, ifaces: &Arc<IfaceTable>) -> Snapshot {
        let mut snap = Snapshot {
            wire: sources::wire::collect(&self.wire, self.ncpus, ifaces),
            wire_unattributed: sources::wire::collect_unattributed(&self.wire, self.ncpus),
            sent: sources::sent::collect(&self.send, self.ncpus, &layout.reasons),
            received: sources::received::collect(&self.recv, self.ncpus),
            egress: sources::egress::collect(&self.egress, self.ncpus, ifaces),
            workload_raw: sources::workload::collect(&self.workloads, self.ncpus),
            histograms: sources::workload::collect_histograms(&self.histograms, self.ncpus),
            ifaces: ifaces.clone(),
            ..Default::default()
        };
        // After the wire counts: an RST is counted there before its verdict is.
        snap.verdicts =
            sources::verdict::collect_aligned(&self.verdicts, self.ncpus, ifaces, &snap.wire);
        for (k, v) in snap.egress.sent() {
            *snap.sent.entry(k).or_default() += v;
        }
        // One batched read of the whole array.
        let stats = sys::bpf::percpu_array_sums(&self.stats, rst_common::STAT_COUNT, self.ncpus);
        for s in Stat::ALL {
            snap.kernel
                .set(s, stats.get(s.index() as usize).copied().unwrap_or(0));
        }
        if snap.kernel.get(Stat::CounterMapFull) > 0
            && !self.full_logged.swap(true, Ordering::Relaxed)
        {
            warn!(
                "a kernel counter map is full: counts stay exact in total, wire RSTs of \
                 interfaces beyond the slots and the overflow map are exported as interface=\"other\" \
                 (rstmon_errors_total{{kind=\"counter_map_full\"}})"
            );
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

    /// Gives `ifindex` a zeroed wire slot and tells the XDP program, before the program
    /// is attached there. `None` when every slot is taken or the ifindex is beyond the
    /// slot table: that interface's RSTs take the (exact) overflow path.
    pub fn assign_slot(&mut self, ifindex: u32) -> Option<u32> {
        if let Some(s) = self.wire.assigned.get(&ifindex) {
            return Some(*s);
        }
        if ifindex >= IFINDEX_SLOT_ENTRIES {
            return None;
        }
        let slot = *self.wire.free.first()?;
        let zeros = PerCpuValues::try_from(vec![WireSlot::default(); self.ncpus]).ok()?;
        if let Err(e) = self.wire.slots.set(slot, zeros, 0) {
            debug!(slot, "zeroing a wire slot: {e}");
            return None;
        }
        if let Err(e) = self.wire.ifindex_slot.set(ifindex, slot + 1, 0) {
            debug!(ifindex, "setting the slot of an interface: {e}");
            return None;
        }
        self.wire.free.remove(&slot);
        self.wire.assigned.insert(ifindex, slot);
        Some(slot)
    }

    /// Forgets every wire counter of `ifindex` (an interface that is gone, or that was
    /// not attached): its slot goes back to the free list, its overflow keys are
    /// removed, so that a new interface given the same index starts from zero.
    pub fn forget_interface(&mut self, ifindex: u32) {
        if let Some(slot) = self.wire.assigned.remove(&ifindex) {
            let _ = self.wire.ifindex_slot.set(ifindex, 0, 0);
            self.wire.free.insert(slot);
        }
        let keys: Vec<WireKey> = self
            .wire
            .overflow
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for k in keys {
            let _ = self.wire.overflow.remove(&k);
        }
        let keys: Vec<WireKey> = self
            .egress
            .forwarded
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for k in keys {
            let _ = self.egress.forwarded.remove(&k);
        }
        self.verdicts.forget(ifindex);
    }

    /// Slots in use and in all.
    pub fn slot_usage(&self) -> (usize, u32) {
        (self.wire.assigned.len(), self.wire.capacity())
    }
}
