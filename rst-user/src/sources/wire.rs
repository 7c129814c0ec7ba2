//! RST segments seen on the wire, by XDP on ingress and by the TC program on egress:
//! exact per (interface, direction, family, flags).

use std::collections::BTreeMap;

use rst_common::{
    DIR_EGRESS, DIR_INGRESS, WIRE_SLOT_COUNTERS, WireEvent, WireKey, wire_slot_index,
};

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

/// `direction` label values, indexed by `DIR_*`.
pub const DIRECTIONS: [&str; 2] = ["ingress", "egress"];

/// The `direction` label of a `DIR_*` value.
pub fn direction_label(direction: u8) -> &'static str {
    DIRECTIONS[usize::from(direction == DIR_EGRESS)]
}

/// The `flags` label of a key.
pub fn flags_label(key: &WireKey) -> &'static str {
    FLAGS[usize::from(key.ack != 0)]
}

/// (interface, direction, family, flags) → exact count.
pub type Counts = BTreeMap<(String, &'static str, Family, &'static str), u64>;

/// (direction, family, flags) → count of RSTs no interface could be told for.
pub type Unattributed = BTreeMap<(&'static str, Family, &'static str), u64>;

/// The counters of one slot (or of the unattributed array), by (direction, family,
/// flags).
fn slot_counts(
    values: &[u64],
    slot: u32,
) -> impl Iterator<Item = (&'static str, Family, &'static str, u64)> + '_ {
    [DIR_INGRESS, DIR_EGRESS].into_iter().flat_map(move |dir| {
        Family::ALL.iter().enumerate().flat_map(move |(v6, fam)| {
            FLAGS.iter().enumerate().map(move |(ack, flags)| {
                let i = wire_slot_index(slot, dir, v6 as u32, ack as u32) as usize;
                (
                    direction_label(dir),
                    *fam,
                    *flags,
                    values.get(i).copied().unwrap_or(0),
                )
            })
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
        for (dir, fam, flags, v) in slot_counts(&values, *slot) {
            *out.entry((iface.clone(), dir, fam, flags)).or_default() += v;
        }
    }
    for (k, v) in percpu_sums(&maps.overflow, ncpus) {
        let (Some(fam), Some(iface)) = (Family::from_raw(k.family), ifnames.get(&k.ifindex)) else {
            continue;
        };
        *out.entry((
            iface.clone(),
            direction_label(k.direction),
            fam,
            flags_label(&k),
        ))
        .or_default() += v;
    }
    out
}

/// Reads the unattributed counters (non-zero only when the overflow map filled up).
pub fn collect_unattributed(maps: &WireMaps, ncpus: usize) -> Unattributed {
    let values = percpu_array_sums(&maps.unattributed, WIRE_SLOT_COUNTERS, ncpus);
    slot_counts(&values, 0)
        .filter(|(_, _, _, v)| *v > 0)
        .map(|(d, f, fl, v)| ((d, f, fl), v))
        .collect()
}

/// `rstmon_wire_resets_total`: every monitored interface's series (at 0 when nothing
/// was counted), and only those; `interface="other"` for RSTs no interface could be
/// told for, when there are any.
pub fn family(snap: &Snapshot) -> FamilyBuilder<'_> {
    let mut wire = FamilyBuilder::new(
        METRIC,
        "TCP RST segments seen on each monitored interface, by XDP on ingress and by TC on egress (exact, never sampled).",
        Kind::Counter,
        &["interface", "family", "flags", "direction"],
    );
    // Keyed in label-name order (direction, family, flags, interface), so the samples
    // come out already sorted.
    let mut values: BTreeMap<(&str, &str, &str, &str), u64> = BTreeMap::new();
    for (iface, _) in &snap.interfaces {
        for dir in DIRECTIONS {
            for fam in Family::ALL {
                for flags in FLAGS {
                    values.insert((dir, fam.label(), flags, iface.as_str()), 0);
                }
            }
        }
    }
    for ((iface, dir, fam, flags), v) in &snap.wire {
        if let Some(slot) = values.get_mut(&(*dir, fam.label(), flags, iface.as_str())) {
            *slot += *v;
        }
    }
    for ((dir, fam, flags), v) in &snap.wire_unattributed {
        *values.entry((*dir, fam.label(), flags, OTHER)).or_default() += *v;
    }
    for ((dir, fam, flags, iface), v) in values {
        wire.add(&[iface, fam, flags, dir], v);
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
        origin: (w.direction == DIR_EGRESS)
            .then(|| super::egress::origin_label(w.origin))
            .flatten(),
        wire_direction: Some(direction_label(w.direction)),
        trigger_flags: None,
        seq: Some(w.seq),
        ack: Some(w.ack),
        window: Some(w.window),
        ttl: Some(w.ttl),
        payload_len: Some(w.payload_len),
        timestamp_option: Some(w.has_ts != 0),
        verdict: None,
        suspect: None,
        peer_ttl: None,
        wire: None,
        owner: None,
    }
}
