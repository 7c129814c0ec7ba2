//! RST segments seen by XDP on ingress: exact per (interface, family, flags).

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap};
use rst_common::{WireEvent, WireKey};

use crate::{
    classify::Family,
    export::{family::FamilyBuilder, snapshot::Snapshot},
    present::sample::{Presenter, Sample, addr, flags_str},
    sys::bpf::percpu_sums,
};

pub const METRIC: &str = "rstmon_wire_resets_total";

/// `flags` label values: an RST without ACK, and RST|ACK.
pub const FLAGS: [&str; 2] = ["rst", "rst_ack"];

/// The `flags` label of a key.
pub fn flags_label(key: &WireKey) -> &'static str {
    FLAGS[usize::from(key.ack != 0)]
}

/// (interface, family, flags) → exact count.
pub type Counts = BTreeMap<(String, Family, &'static str), u64>;

/// Reads the wire counters of the interfaces in `ifnames` (the ones monitored now);
/// keys of an interface that is gone are left out.
pub fn collect(
    map: &PerCpuHashMap<MapData, WireKey, u64>,
    ncpus: usize,
    ifnames: &BTreeMap<u32, String>,
) -> Counts {
    let mut out = Counts::new();
    for (k, v) in percpu_sums(map, ncpus) {
        let (Some(fam), Some(iface)) = (Family::from_raw(k.family), ifnames.get(&k.ifindex)) else {
            continue;
        };
        *out.entry((iface.clone(), fam, flags_label(&k)))
            .or_default() += v;
    }
    out
}

/// `rstmon_wire_resets_total`: every monitored interface's series (at 0 when nothing
/// was counted), and only those.
pub fn family(snap: &Snapshot) -> FamilyBuilder {
    let mut wire = FamilyBuilder::new(
        METRIC,
        "TCP RST segments seen by XDP on ingress of each monitored interface (exact, never sampled).",
        prometheus::proto::MetricType::COUNTER,
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
    for ((fam, flags, iface), v) in values {
        wire.add(&[iface, fam, flags], v as f64);
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
    }
}
