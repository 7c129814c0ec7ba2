//! Resets by workload, and the idle-time and connection-age histograms: exact kernel
//! counters (`WORKLOAD_COUNTERS` keyed by cgroup id, network namespace, side and the
//! side's classification key; `HISTOGRAMS`), named at scrape time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use rst_common::{
    AGE_BOUNDS_MS, HIST_AGE, HIST_BOUNDS, HIST_IDLE, HIST_SLOTS, HIST_SUM, IDLE_BOUNDS_MS,
    SIDE_RECEIVED, SIDE_SENT, WorkloadKey, hist_index, recv_key_of, send_key_of,
};

use crate::{
    attribute::{Admission, Names},
    classify::{self, RecvCause, SendCause},
    export::family::{FamilyBuilder, Kind},
    sys::{
        self,
        bpf::{percpu_array_sums, percpu_sums},
    },
};

pub const METRIC: &str = "rstmon_workload_resets_total";
pub const IDLE: &str = "rstmon_reset_idle_seconds";
pub const AGE: &str = "rstmon_reset_connection_age_seconds";
pub const OVERFLOW: &str = "rstmon_workload_overflow_total";

/// How long a scrape waits for names it has not seen before.
pub const RESOLVE_WAIT: Duration = Duration::from_millis(500);

/// The `side` label.
pub fn side_label(side: u8) -> &'static str {
    if side == SIDE_RECEIVED {
        "received"
    } else {
        "sent"
    }
}

/// Keys up to which a scrape reads the keys it knows one by one rather than the whole
/// map: a lookup costs about as much as scanning a few hundred empty buckets.
const LOOKUP_MAX: usize = 128;

/// `WORKLOAD_COUNTERS` and what its last scan found. Its keys are never deleted (a
/// cgroup id is never reused, and neither side removes keys), so while the map's element
/// count has not moved its keys are the ones of that scan, and their values are read
/// one by one instead of scanning every one of its 65 536 buckets, most of them empty.
/// The count is the map's `memlock`, which grows with its elements on Linux 6.4+
/// ([`sys::bpf::memlock_counts_elements`]); elsewhere every read is a scan.
pub struct Maps {
    pub(crate) map: PerCpuHashMap<MapData, WorkloadKey, u64>,
    /// The map's `/proc/self/fdinfo` entry, once opened.
    fdinfo: OnceLock<Option<File>>,
    /// `memlock` read just before the last scan, and the keys it found.
    known: Mutex<Option<(u64, Vec<WorkloadKey>)>>,
}

impl TryFrom<aya::maps::Map> for Maps {
    type Error = aya::maps::MapError;

    fn try_from(map: aya::maps::Map) -> Result<Self, Self::Error> {
        Ok(Self {
            map: PerCpuHashMap::try_from(map)?,
            fdinfo: OnceLock::new(),
            known: Mutex::new(None),
        })
    }
}

impl Maps {
    /// The map's `memlock` now, when it counts elements.
    fn memlock(&self) -> Option<u64> {
        if !sys::bpf::memlock_counts_elements() {
            return None;
        }
        let f = self
            .fdinfo
            .get_or_init(|| sys::bpf::map_fdinfo(&self.map).ok());
        sys::bpf::map_memlock(f.as_ref()?).ok()
    }

    /// The keys of the last scan and their values now, when no element was added since
    /// (`memlock` unchanged) and they are few; `None` otherwise, or when a key is gone.
    fn lookup_known(&self, memlock: u64, ncpus: usize) -> Option<Vec<(WorkloadKey, u64)>> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let (at, keys) = known.as_ref()?;
        if *at != memlock || keys.len() > LOOKUP_MAX {
            return None;
        }
        let mut values = vec![0u64; ncpus];
        keys.iter()
            .map(|k| {
                let v = sys::bpf::percpu_lookup_sum(&self.map, k, &mut values).ok()??;
                Some((*k, v))
            })
            .collect()
    }
}

/// Exact counts by (cgroup id, namespace) and the raw key: a scan of the map, or
/// lookups of the keys of the last scan while no key was added.
pub fn collect(maps: &Maps, ncpus: usize) -> Vec<(WorkloadKey, u64)> {
    // Read before the scan: an element added after it moves it, and the next read scans.
    let memlock = maps.memlock();
    if let Some(m) = memlock
        && let Some(v) = maps.lookup_known(m, ncpus)
    {
        return v;
    }
    // Only a complete scan (a batch read that succeeded) may stand for the key set.
    let (v, complete) = match sys::bpf::batch_sums(&maps.map, ncpus) {
        Ok(v) => (v, true),
        Err(_) => (percpu_sums(&maps.map, ncpus), false),
    };
    *maps.known.lock().unwrap_or_else(|p| p.into_inner()) = memlock
        .filter(|_| complete)
        .map(|m| (m, v.iter().map(|(k, _)| *k).collect()));
    v
}

/// One histogram: non-cumulative bucket counts (the last is +Inf) and the sum in ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: [u64; HIST_BOUNDS + 1],
    pub sum_ms: u64,
}

/// (idle, age) × (sent, received).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histograms {
    pub idle: [Histogram; 2],
    pub age: [Histogram; 2],
}

/// Reads `HISTOGRAMS` (one batched read), summing CPUs.
pub fn collect_histograms(map: &PerCpuArray<MapData, u64>, ncpus: usize) -> Histograms {
    let values = percpu_array_sums(map, map.len(), ncpus);
    let get = |i: u32| values.get(i as usize).copied().unwrap_or(0);
    let mut h = Histograms::default();
    for side in [SIDE_SENT, SIDE_RECEIVED] {
        for (kind, out) in [(HIST_IDLE, &mut h.idle), (HIST_AGE, &mut h.age)] {
            let o = &mut out[side as usize];
            for b in 0..=HIST_BOUNDS as u32 {
                o.buckets[b as usize] = get(hist_index(kind, side, b));
            }
            o.sum_ms = get(hist_index(kind, side, HIST_SUM));
        }
    }
    let _ = HIST_SLOTS;
    h
}

/// (side, cause, workload) → count, and the workloads that have a label of their own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: BTreeMap<(&'static str, &'static str, String), u64>,
    pub workloads: BTreeSet<String>,
    pub overflow: u64,
}

/// Names the workloads of the exact counters, at most `--max-workloads` of them. A
/// (cgroup, namespace) keeps the label it was first given.
pub struct Labels {
    names: Names,
    admission: Admission,
    given: Mutex<HashMap<(u64, u32), String>>,
}

impl Labels {
    pub fn new(names: Names, max_workloads: usize) -> Self {
        Self {
            names,
            admission: Admission::new(max_workloads),
            given: Mutex::new(HashMap::new()),
        }
    }

    /// The resolver (shared with `watch` and the samples).
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Classifies and names `raw` (from [`collect`]). Waits up to [`RESOLVE_WAIT`] for
    /// ids never named before (a scrape, not the drain loop).
    pub fn count(&self, raw: &[(WorkloadKey, u64)], reasons: &BTreeMap<u32, String>) -> Counts {
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        let mut ns_labels: HashMap<(u64, u32), String> = HashMap::new();
        let mut new: Vec<(u64, u32)> = raw
            .iter()
            .map(|(k, _)| (k.cgroup_id, k.netns))
            .filter(|id| !given.contains_key(id))
            .collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty() {
            let resolved = self.names.resolve(&new, RESOLVE_WAIT);
            // In the order of first appearance would need timestamps; ids in order is
            // stable and deterministic.
            for id in new {
                if let Some(Some(owner)) = resolved.get(&id) {
                    // A cgroup id is never reused: its label is final. A namespace's
                    // inode is reused after it is gone: asked again each scrape.
                    let label = self.admission.label(&owner.workload);
                    if id.0 != 0 {
                        given.insert(id, label);
                    } else {
                        ns_labels.insert(id, label);
                    }
                }
            }
        }
        let mut out = Counts::default();
        for (k, v) in raw {
            let id = (k.cgroup_id, k.netns);
            let label = match given.get(&id).or_else(|| ns_labels.get(&id)) {
                Some(l) => l.clone(),
                // Not resolved within the wait: its ids, for this scrape only.
                None => self.admission.label(&Names::fallback(id.0, id.1).workload),
            };
            let cause = if k.side == SIDE_RECEIVED {
                classify::classify_recv(&recv_key_of(k.key)).label()
            } else {
                classify::classify_send_key(reasons, &send_key_of(k.key)).label()
            };
            *out.rows
                .entry((side_label(k.side), cause, label))
                .or_default() += v;
        }
        out.workloads = self.admission.admitted().into_iter().collect();
        if out
            .rows
            .keys()
            .any(|(_, _, w)| w == crate::attribute::OTHER)
        {
            out.workloads.insert(crate::attribute::OTHER.into());
        }
        out.overflow = self.admission.overflow();
        out
    }
}

/// `rstmon_workload_resets_total`: every cause of both sides for every workload that
/// has a label, at 0 when nothing was counted.
pub fn family(c: &Counts) -> FamilyBuilder<'_> {
    let mut f = FamilyBuilder::new(
        METRIC,
        "TCP resets by the workload that owns the socket (cgroup: systemd unit, container, pod) or, without a socket, its network namespace; exact kernel counters. At most --max-workloads workloads, the rest as workload=\"other\".",
        Kind::Counter,
        &["side", "cause", "workload"],
    );
    for w in &c.workloads {
        for cause in SendCause::ALL {
            let v = c
                .rows
                .get(&("sent", cause.label(), w.clone()))
                .copied()
                .unwrap_or(0);
            f.add(&["sent", cause.label(), w.as_str()], v);
        }
        for cause in RecvCause::ALL {
            let v = c
                .rows
                .get(&("received", cause.label(), w.clone()))
                .copied()
                .unwrap_or(0);
            f.add(&["received", cause.label(), w.as_str()], v);
        }
    }
    f
}

/// `rstmon_workload_overflow_total`.
pub fn overflow_family(c: &Counts) -> FamilyBuilder<'static> {
    let mut f = FamilyBuilder::new(
        OVERFLOW,
        "Distinct workloads beyond --max-workloads, counted as workload=\"other\" in rstmon_workload_resets_total (each counted once).",
        Kind::Counter,
        &[],
    );
    f.add(&[], c.overflow);
    f
}

/// Bucket bounds in seconds, as label values.
fn le(bounds_ms: &[u64; HIST_BOUNDS]) -> Vec<String> {
    bounds_ms
        .iter()
        .map(|ms| format!("{}", *ms as f64 / 1000.0))
        .chain(std::iter::once("+Inf".to_string()))
        .collect()
}

/// Writes one histogram family (both sides) in the text format.
fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[u64; HIST_BOUNDS],
    h: &[Histogram; 2],
) {
    use std::fmt::Write as _;
    let les = le(bounds);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for side in [SIDE_RECEIVED, SIDE_SENT] {
        let s = side_label(side);
        let hist = &h[side as usize];
        let mut cum = 0u64;
        for (i, l) in les.iter().enumerate() {
            cum += hist.buckets[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{l}\",side=\"{s}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "{name}_sum{{side=\"{s}\"}} {}",
            hist.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count{{side=\"{s}\"}} {cum}");
    }
}

/// The two histogram families, in name order.
pub fn write_histograms(out: &mut String, h: &Histograms) {
    write_histogram(
        out,
        AGE,
        "Age of the connection at a reset (from SYN_SENT or SYN_RECV), where rstmon saw it start; exact.",
        &AGE_BOUNDS_MS,
        &h.age,
    );
    write_histogram(
        out,
        IDLE,
        "Time since the connection last received a segment, at a reset of a synchronized connection; exact. Buckets show middlebox idle timeouts (e.g. 350 s NAT).",
        &IDLE_BOUNDS_MS,
        &h.idle,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_text_is_cumulative_with_sum_and_count() {
        let mut h = Histograms::default();
        h.idle[SIDE_SENT as usize].buckets[2] = 1; // 2 s: le 5
        h.idle[SIDE_SENT as usize].buckets[HIST_BOUNDS] = 1; // beyond an hour
        h.idle[SIDE_SENT as usize].sum_ms = 2_000 + 4_000_000;
        let mut out = String::new();
        write_histograms(&mut out, &h);
        assert!(out.contains("rstmon_reset_idle_seconds_bucket{le=\"1\",side=\"sent\"} 0\n"));
        assert!(out.contains("rstmon_reset_idle_seconds_bucket{le=\"5\",side=\"sent\"} 1\n"));
        assert!(out.contains("rstmon_reset_idle_seconds_bucket{le=\"350\",side=\"sent\"} 1\n"));
        assert!(out.contains("rstmon_reset_idle_seconds_bucket{le=\"+Inf\",side=\"sent\"} 2\n"));
        assert!(out.contains("rstmon_reset_idle_seconds_sum{side=\"sent\"} 4002\n"));
        assert!(out.contains("rstmon_reset_idle_seconds_count{side=\"sent\"} 2\n"));
        assert!(out.contains(
            "rstmon_reset_connection_age_seconds_bucket{le=\"0.01\",side=\"received\"} 0\n"
        ));
        assert!(
            out.find("# TYPE rstmon_reset_connection_age_seconds histogram")
                < out.find("# TYPE rstmon_reset_idle_seconds histogram")
        );
    }
}
