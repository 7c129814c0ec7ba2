//! What the stack did with each ingress RST (`accepted`, `challenged`, `ignored`) and
//! the forged-reset signals, per interface: `accepted` and `challenged` and the signals
//! from `VERDICT_COUNTERS`, `ignored` derived from the exact wire counts (every ingress
//! RST has exactly one of the three fates; docs/classification.md).

use std::{collections::BTreeMap, sync::Mutex};

use aya::maps::{MapData, PerCpuHashMap};
use rst_common::{
    CounterKey, KIND_SIGNAL, KIND_VERDICT, SIGNAL_ALIVE_AFTER_RESET, SIGNAL_SEQ_SPRAY, SIGNAL_TTL,
    VERDICT_ACCEPTED, VERDICT_CHALLENGED, VERDICT_IGNORED,
};

use crate::{
    classify::Family,
    export::{
        family::{FamilyBuilder, Kind},
        snapshot::Snapshot,
    },
    sys::bpf::percpu_sums,
};

pub const VERDICT_METRIC: &str = "rstmon_wire_reset_verdicts_total";
pub const SUSPECT_METRIC: &str = "rstmon_suspect_resets_total";

/// `verdict` label values, by `VERDICT_*` number.
pub const VERDICTS: [(u8, &str); 3] = [
    (VERDICT_ACCEPTED, "accepted"),
    (VERDICT_CHALLENGED, "challenged"),
    (VERDICT_IGNORED, "ignored"),
];

/// `signal` label values, by `SIGNAL_*` number.
pub const SIGNALS: [(u8, &str); 3] = [
    (SIGNAL_TTL, "ttl"),
    (SIGNAL_ALIVE_AFTER_RESET, "alive_after_reset"),
    (SIGNAL_SEQ_SPRAY, "seq_spray"),
];

/// The label of a verdict number.
pub fn verdict_label(v: u8) -> &'static str {
    VERDICTS
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, l)| *l)
        .unwrap_or("ignored")
}

/// The signals of a record's `suspect` bits, in label order.
pub fn signal_labels(bits: u8) -> Vec<&'static str> {
    SIGNALS
        .iter()
        .filter(|(n, _)| bits & (1 << n) != 0)
        .map(|(_, l)| *l)
        .collect()
}

/// The kernel's verdict and signal counters, and the floor that keeps the derived
/// `ignored` from going back (an RST counted on the wire whose verdict is still being
/// made when a scrape reads the maps is `ignored` for that moment).
pub struct Maps {
    pub(crate) counters: PerCpuHashMap<MapData, CounterKey, u64>,
    pub(crate) ignored_floor: Mutex<BTreeMap<(u32, Family), u64>>,
}

impl Maps {
    pub fn new(counters: PerCpuHashMap<MapData, CounterKey, u64>) -> Self {
        Self {
            counters,
            ignored_floor: Mutex::default(),
        }
    }

    /// Forgets the counters of an interface that is gone.
    pub fn forget(&mut self, ifindex: u32) {
        let keys: Vec<CounterKey> = self
            .counters
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for k in keys {
            let _ = self.counters.remove(&k);
        }
        self.ignored_floor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _), _| *i != ifindex);
    }
}

/// (interface, family, kind, value) → exact count (`ignored`: derived).
pub type Counts = BTreeMap<(String, Family, u8, u8), u64>;

/// The verdict and signal counts of the interfaces in `ifnames`; `ingress` holds each
/// one's ingress RSTs by family, read before the verdicts (so that an RST is on the
/// wire count before its verdict is).
pub fn collect(
    maps: &Maps,
    ncpus: usize,
    ifnames: &BTreeMap<u32, String>,
    ingress: &BTreeMap<(String, Family), u64>,
) -> Counts {
    let mut by_index: BTreeMap<(u32, Family, u8, u8), u64> = BTreeMap::new();
    for (k, v) in percpu_sums(&maps.counters, ncpus) {
        if let Some(fam) = Family::from_raw(k.family) {
            *by_index
                .entry((k.ifindex, fam, k.kind, k.value))
                .or_default() += v;
        }
    }
    let mut out = Counts::new();
    let mut floor = maps.ignored_floor.lock().unwrap_or_else(|p| p.into_inner());
    for (ifindex, name) in ifnames {
        for fam in Family::ALL {
            let get = |value| {
                by_index
                    .get(&(*ifindex, *fam, KIND_VERDICT, value))
                    .copied()
                    .unwrap_or(0)
            };
            let (accepted, challenged) = (get(VERDICT_ACCEPTED), get(VERDICT_CHALLENGED));
            let wire = ingress.get(&(name.clone(), *fam)).copied().unwrap_or(0);
            let f = floor.entry((*ifindex, *fam)).or_default();
            let n = ignored(wire, accepted, challenged, f);
            out.insert((name.clone(), *fam, KIND_VERDICT, VERDICT_IGNORED), n);
            out.insert(
                (name.clone(), *fam, KIND_VERDICT, VERDICT_ACCEPTED),
                accepted,
            );
            out.insert(
                (name.clone(), *fam, KIND_VERDICT, VERDICT_CHALLENGED),
                challenged,
            );
            for (s, _) in SIGNALS {
                let n = by_index
                    .get(&(*ifindex, *fam, KIND_SIGNAL, s))
                    .copied()
                    .unwrap_or(0);
                out.insert((name.clone(), *fam, KIND_SIGNAL, s), n);
            }
        }
    }
    out
}

/// `ignored` of one interface and family: its ingress RSTs less those accepted or
/// challenged, never below what was exported before (`floor`, raised to it): an RST
/// whose verdict is made between the reads of the wire and the verdict counters counts
/// `ignored` for one scrape, and a counter must not go back.
pub fn ignored(wire: u64, accepted: u64, challenged: u64, floor: &mut u64) -> u64 {
    *floor = (*floor).max(wire.saturating_sub(accepted.saturating_add(challenged)));
    *floor
}

/// Sum over interfaces and families of one verdict or signal.
pub fn total(counts: &Counts, kind: u8, value: u8) -> u64 {
    counts
        .iter()
        .filter(|((_, _, k, v), _)| *k == kind && *v == value)
        .map(|(_, n)| n)
        .sum()
}

fn family_of<'a>(
    snap: &'a Snapshot,
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    kind: u8,
    values: &[(u8, &'static str)],
) -> FamilyBuilder<'a> {
    let mut f = FamilyBuilder::new(name, help, Kind::Counter, labels);
    // Label-name order, so the samples come out sorted.
    let mut rows: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for iface in snap.ifaces.ifaces() {
        for fam in Family::ALL {
            for (_, l) in values {
                rows.insert((fam.label(), iface.name.as_str(), l), 0);
            }
        }
    }
    for ((iface, fam, k, v), n) in &snap.verdicts {
        let Some((_, l)) = values.iter().find(|(x, _)| x == v) else {
            continue;
        };
        if *k == kind
            && let Some(slot) = rows.get_mut(&(fam.label(), iface.as_str(), *l))
        {
            *slot += *n;
        }
    }
    for ((fam, iface, l), n) in rows {
        f.add(&[iface, fam, l], n);
    }
    f
}

/// `rstmon_wire_reset_verdicts_total{interface, family, verdict}`.
pub fn verdict_family(snap: &Snapshot) -> FamilyBuilder<'_> {
    family_of(
        snap,
        VERDICT_METRIC,
        "Ingress TCP RSTs by what the stack did with them: accepted by a socket, challenged (answered with a challenge ACK), ignored (anything else: out of window, no connection, not for this host).",
        &["interface", "family", "verdict"],
        KIND_VERDICT,
        &VERDICTS,
    )
}

/// `rstmon_suspect_resets_total{interface, family, signal}`.
pub fn suspect_family(snap: &Snapshot) -> FamilyBuilder<'_> {
    family_of(
        snap,
        SUSPECT_METRIC,
        "Ingress TCP RSTs that look forged, by signal: ttl (differs from the peer's handshake), alive_after_reset (the peer kept sending), seq_spray (many sequence numbers at once).",
        &["interface", "family", "signal"],
        KIND_SIGNAL,
        &SIGNALS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(verdict_label(VERDICT_CHALLENGED), "challenged");
        assert_eq!(verdict_label(VERDICT_IGNORED), "ignored");
        assert_eq!(
            signal_labels((1 << SIGNAL_TTL) | (1 << SIGNAL_SEQ_SPRAY)),
            vec!["ttl", "seq_spray"]
        );
        assert!(signal_labels(0).is_empty());
    }

    #[test]
    fn ignored_is_the_rest_and_never_goes_back() {
        let mut floor = 0;
        assert_eq!(ignored(10, 6, 3, &mut floor), 1);
        // Read while an RST was on the wire count but not yet accepted: 2 for now...
        assert_eq!(ignored(11, 6, 3, &mut floor), 2);
        // ...and not back to 1 once it is.
        assert_eq!(ignored(11, 7, 3, &mut floor), 2);
        assert_eq!(ignored(13, 7, 3, &mut floor), 3);
        // More verdicts than wire counts (a verdict read after a wire count): never below 0.
        let mut floor = 0;
        assert_eq!(ignored(1, 2, 0, &mut floor), 0);
    }
}
