//! What the stack did with each ingress RST (`accepted`, `challenged`, `ignored`) and
//! the forged-reset signals, per interface: `accepted` and `challenged` and the signals
//! from `VERDICT_COUNTERS`, `ignored` derived from the exact wire counts (every ingress
//! RST has exactly one of the three fates; docs/classification.md).

use std::{collections::BTreeMap, sync::Mutex};

use aya::maps::{MapData, PerCpuHashMap};
use rst_common::{
    CounterKey, DIR_INGRESS, KIND_SIGNAL, KIND_VERDICT, SIGNAL_ALIVE_AFTER_RESET, SIGNAL_SEQ_SPRAY,
    SIGNAL_TTL, VERDICT_ACCEPTED, VERDICT_CHALLENGED, VERDICT_IGNORED, wire_slot_index,
};

use crate::{classify::Family, export::iftable::IfaceTable, sources::wire, sys::bpf::percpu_sums};

pub const VERDICT_METRIC: &str = "rstmon_wire_reset_verdicts_total";
pub const SUSPECT_METRIC: &str = "rstmon_suspect_resets_total";
pub const VERDICT_HELP: &str = "Ingress TCP RSTs by what the stack did with them: accepted by a socket, challenged (answered with a challenge ACK), ignored (anything else: out of window, no connection, not for this host).";
pub const SUSPECT_HELP: &str = "Ingress TCP RSTs that look forged, by signal: ttl (differs from the peer's handshake), alive_after_reset (the peer kept sending), seq_spray (many sequence numbers at once).";

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
    /// By ifindex (ascending): the floor of `ignored` of each family.
    pub(crate) ignored_floor: Mutex<Vec<(u32, [u64; 2])>>,
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
            .retain(|(i, _)| *i != ifindex);
    }
}

/// Counters of one family of one interface: [`VERDICTS`], then [`SIGNALS`], each in its
/// own order.
pub const PER_FAMILY: usize = VERDICTS.len() + SIGNALS.len();
/// Counters of one interface: IPv4's [`PER_FAMILY`], then IPv6's.
pub const COUNTERS: usize = 2 * PER_FAMILY;
/// The verdicts and signals of each interface of an [`IfaceTable`], aligned with its
/// [`IfaceTable::ifaces`] (`ignored` derived).
pub type Rows = Vec<[u64; COUNTERS]>;

/// Position of (`v6`, `kind`, `value`) within an interface's counters.
pub fn column(v6: usize, kind: u8, value: u8) -> Option<usize> {
    let within = match kind {
        KIND_VERDICT => VERDICTS.iter().position(|(v, _)| *v == value)?,
        KIND_SIGNAL => VERDICTS.len() + SIGNALS.iter().position(|(s, _)| *s == value)?,
        _ => return None,
    };
    Some(v6 * PER_FAMILY + within)
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
    let ifindexes: Vec<u32> = ifnames.keys().copied().collect();
    let names: Vec<&String> = ifnames.values().collect();
    let rows = collect_rows(maps, ncpus, &ifindexes, |k, fam| {
        ingress.get(&(names[k].clone(), fam)).copied().unwrap_or(0)
    });
    let mut out = Counts::new();
    for (name, row) in names.into_iter().zip(&rows) {
        for (v6, fam) in Family::ALL.iter().enumerate() {
            let kinds = VERDICTS
                .iter()
                .map(|(v, _)| (KIND_VERDICT, *v))
                .chain(SIGNALS.iter().map(|(s, _)| (KIND_SIGNAL, *s)));
            for (kind, value) in kinds {
                if let Some(c) = column(v6, kind, value) {
                    *out.entry((name.clone(), *fam, kind, value)).or_default() += row[c];
                }
            }
        }
    }
    out
}

/// The verdict and signal counts of the interfaces of `table`, aligned with its
/// [`IfaceTable::ifaces`]; `wire` holds their wire counts, read before the verdicts (so
/// that an RST is on the wire count before its verdict is).
pub fn collect_aligned(maps: &Maps, ncpus: usize, table: &IfaceTable, wire: &wire::Counts) -> Rows {
    let ifindexes: Vec<u32> = table.ifaces().iter().map(|i| i.ifindex).collect();
    collect_rows(maps, ncpus, &ifindexes, |k, fam| {
        let v6 = u32::from(fam == Family::Ipv6);
        wire.get(k).map_or(0, |c| {
            (0..2)
                .map(|ack| c[wire_slot_index(0, DIR_INGRESS, v6, ack) as usize])
                .sum()
        })
    })
}

/// The counts of `ifindexes` (ascending, distinct), aligned with it; `ingress(k, family)`
/// is the ingress RSTs of the `k`th, from which `ignored` is derived.
fn collect_rows(
    maps: &Maps,
    ncpus: usize,
    ifindexes: &[u32],
    ingress: impl Fn(usize, Family) -> u64,
) -> Rows {
    let mut rows: Rows = vec![[0; COUNTERS]; ifindexes.len()];
    for (k, v) in percpu_sums(&maps.counters, ncpus) {
        let (Some(fam), Ok(pos)) = (
            Family::from_raw(k.family),
            ifindexes.binary_search(&k.ifindex),
        ) else {
            continue;
        };
        let v6 = usize::from(fam == Family::Ipv6);
        // `ignored` is derived, never read.
        if (k.kind, k.value) == (KIND_VERDICT, VERDICT_IGNORED) {
            continue;
        }
        if let Some(c) = column(v6, k.kind, k.value) {
            rows[pos][c] += v;
        }
    }
    let mut floors = maps.ignored_floor.lock().unwrap_or_else(|p| p.into_inner());
    derive_ignored(&mut floors, ifindexes, &mut rows, ingress);
    rows
}

/// Writes `ignored` into `rows` (aligned with `ifindexes`, ascending) from `ingress`,
/// raising each interface's floor in `floors` (by ifindex), where interfaces seen for the
/// first time are added and the others kept.
fn derive_ignored(
    floors: &mut Vec<(u32, [u64; 2])>,
    ifindexes: &[u32],
    rows: &mut [[u64; COUNTERS]],
    ingress: impl Fn(usize, Family) -> u64,
) {
    let col = |v6, value| column(v6, KIND_VERDICT, value).unwrap_or(0);
    // Both by ifindex: one merge.
    let old = std::mem::take(floors);
    floors.reserve(old.len().max(ifindexes.len()));
    let mut old = old.into_iter().peekable();
    for (k, (&ifindex, row)) in ifindexes.iter().zip(rows.iter_mut()).enumerate() {
        while let Some(e) = old.next_if(|(i, _)| *i < ifindex) {
            floors.push(e);
        }
        let mut floor = old
            .next_if(|(i, _)| *i == ifindex)
            .map_or([0; 2], |(_, f)| f);
        for (v6, fam) in Family::ALL.iter().enumerate() {
            row[col(v6, VERDICT_IGNORED)] = ignored(
                ingress(k, *fam),
                row[col(v6, VERDICT_ACCEPTED)],
                row[col(v6, VERDICT_CHALLENGED)],
                &mut floor[v6],
            );
        }
        floors.push((ifindex, floor));
    }
    floors.extend(old);
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
    fn columns_are_distinct_and_cover_a_row() {
        let mut seen = [false; COUNTERS];
        for v6 in 0..2 {
            for (v, _) in VERDICTS {
                seen[column(v6, KIND_VERDICT, v).unwrap()] = true;
            }
            for (s, _) in SIGNALS {
                seen[column(v6, KIND_SIGNAL, s).unwrap()] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(column(0, KIND_SIGNAL, 200), None);
        assert_eq!(column(0, 200, VERDICT_ACCEPTED), None);
    }

    #[test]
    fn floors_are_kept_per_interface_across_scrapes() {
        let acc = column(0, KIND_VERDICT, VERDICT_ACCEPTED).unwrap();
        let ign = column(0, KIND_VERDICT, VERDICT_IGNORED).unwrap();
        let ign6 = column(1, KIND_VERDICT, VERDICT_IGNORED).unwrap();
        let mut floors = Vec::new();
        // ifindex 3: 5 ingress IPv4 RSTs, 2 accepted; ifindex 7: 1 IPv6 RST.
        let mut rows = vec![[0; COUNTERS]; 2];
        rows[0][acc] = 2;
        let wire = |k: usize, fam: Family| match (k, fam) {
            (0, Family::Ipv4) => 5,
            (1, Family::Ipv6) => 1,
            _ => 0,
        };
        derive_ignored(&mut floors, &[3, 7], &mut rows, wire);
        assert_eq!((rows[0][ign], rows[1][ign6]), (3, 1));
        assert_eq!(floors, vec![(3, [3, 0]), (7, [0, 1])]);
        // Only ifindex 5 (new) and 7 asked for, 7's verdict made meanwhile: its floor
        // holds, 3's is kept, 5's is added in its place.
        let mut rows = vec![[0; COUNTERS]; 2];
        rows[1][column(1, KIND_VERDICT, VERDICT_ACCEPTED).unwrap()] = 1;
        derive_ignored(&mut floors, &[5, 7], &mut rows, |k, fam| {
            u64::from(k == 1 && fam == Family::Ipv6)
        });
        assert_eq!((rows[0][ign], rows[1][ign6]), (0, 1));
        assert_eq!(floors, vec![(3, [3, 0]), (5, [0, 0]), (7, [0, 1])]);
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
