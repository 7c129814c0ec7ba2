//! RST segments seen by XDP on ingress: exact per (interface, family, flags).

use std::collections::BTreeMap;

use rst_common::{DIR_INGRESS, WIRE_SLOT_COUNTERS, WireEvent, WireKey, wire_slot_index};

use crate::{
    classify::Family,
    export::{
        family::{FamilyBuilder, Kind},
        snapshot::{Snapshot, WireMaps},
    },
    present::sample::{Presenter, Sample, addr, flags_str},
    sys::bpf::{percpu_array_sums, percpu_sums},
};

pub const METRIC: &str = "rstmon_wire_resets_total";

/// `flags` label values: an RST without ACK, and RST|ACK.
pub const FLAGS: [&str; 2] = ["rst", "rst_ack"];

/// The `interface` label of RSTs no interface could be told for.
pub const OTHER: &str = "other";

/// The `flags` label of a key.
pub fn flags_label(key: &WireKey) -> &'static str {
    FLAGS[usize::from(key.ack != 0)]
}

/// (interface, family, flags) → exact count.
pub type Counts = BTreeMap<(String, Family, &'static str), u64>;

/// (family, flags) → count of RSTs no interface could be told for.
pub type Unattributed = BTreeMap<(Family, &'static str), u64>;

/// The ingress counters of one slot (or of the unattributed array), by (family, flags).
fn slot_counts(
    values: &[u64],
    slot: u32,
) -> impl Iterator<Item = (Family, &'static str, u64)> + '_ {
    Family::ALL.iter().enumerate().flat_map(move |(v6, fam)| {
        FLAGS.iter().enumerate().map(move |(ack, flags)| {
            let i = wire_slot_index(slot, DIR_INGRESS, v6 as u32, ack as u32) as usize;
            (*fam, *flags, values.get(i).copied().unwrap_or(0))
        })
    })
}

/// Reads the wire counters of the interfaces in `ifnames` (the ones monitored now): the
/// slots in use, in one batched read, and the overflow keys of interfaces without one.
/// Counters of an interface that is gone are left out.
pub fn collect(maps: &WireMaps, ncpus: usize, ifnames: &BTreeMap<u32, String>) -> Counts {
    let mut out = Counts::new();
    let used = maps
        .assigned
        .values()
        .max()
        .map(|s| (s + 1) * WIRE_SLOT_COUNTERS);
    let values = used
        .map(|n| percpu_array_sums(&maps.slots, n, ncpus))
        .unwrap_or_default();
    for (ifindex, slot) in &maps.assigned {
        let Some(iface) = ifnames.get(ifindex) else {
            continue;
        };
        for (fam, flags, v) in slot_counts(&values, *slot) {
            *out.entry((iface.clone(), fam, flags)).or_default() += v;
        }
    }
    for (k, v) in percpu_sums(&maps.overflow, ncpus) {
        let (Some(fam), Some(iface)) = (Family::from_raw(k.family), ifnames.get(&k.ifindex)) else {
            continue;
        };
        if k.direction != DIR_INGRESS {
            continue;
        }
        *out.entry((iface.clone(), fam, flags_label(&k)))
            .or_default() += v;
    }
    out
}

/// Reads the unattributed counters (non-zero only when the overflow map filled up).
pub fn collect_unattributed(maps: &WireMaps, ncpus: usize) -> Unattributed {
    let values = percpu_array_sums(&maps.unattributed, WIRE_SLOT_COUNTERS, ncpus);
    slot_counts(&values, 0)
        .filter(|(_, _, v)| *v > 0)
        .map(|(f, fl, v)| ((f, fl), v))
        .collect()
}

/// `rstmon_wire_resets_total`: every monitored interface's series (at 0 when nothing
/// was counted), and only those; `interface="other"` for RSTs no interface could be
/// told for, when there are any.
pub fn family(snap: &Snapshot) -> FamilyBuilder<'_> {
    let mut wire = FamilyBuilder::new(
        METRIC,
        "TCP RST segments seen by XDP on ingress of each monitored interface (exact, never sampled).",
        Kind::Counter,
        &["interface", "family", "flags"],
    );
    // Keyed in label-name order (family, flags, interface), so the samples come out
    // already sorted.
    let mut values: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (iface, _) in &snap.interfaces {
        for fam in Family::ALL {
            for flags in FLAGS {
                values.insert((fam.label(), flags, iface.as_str()), 0);
            }
        }
    }
    for ((iface, fam, flags), v) in &snap.wire {
        if let Some(slot) = values.get_mut(&(fam.label(), flags, iface.as_str())) {
            *slot += *v;
        }
    }
    for ((fam, flags), v) in &snap.wire_unattributed {
        *values.entry((fam.label(), flags, OTHER)).or_default() += *v;
    }
    for ((fam, flags, iface), v) in values {
        wire.add(&[iface, fam, flags], v);
    }
    wire
}

/// A wire sample as a `watch` line.
pub fn present(p: &Presenter, w: &WireEvent) -> Sample {
    Sample {
        time: p.time(w.ts_ns),
        direction: "wire",
        cause: None,
        reason: None,
        state: None,
        family: Presenter::family(w.family),
        src: addr(w.family, &w.saddr).to_string(),
        sport: w.sport,
        dst: addr(w.family, &w.daddr).to_string(),
        dport: w.dport,
        interface: Some(p.ifname(w.ifindex)),
        rst_flags: Some(flags_str(w.tcp_flags)),
        origin: None,
        trigger_flags: None,
        seq: Some(w.seq),
        ack: Some(w.ack),
        window: Some(w.window),
        ttl: Some(w.ttl),
        payload_len: Some(w.payload_len),
        timestamp_option: Some(w.has_ts != 0),
        owner: None,
    }
}
