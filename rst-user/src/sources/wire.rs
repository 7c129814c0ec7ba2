//! RST segments seen on the wire, by XDP on ingress and by the TC program on egress:
//! exact per (interface, direction, family, flags).

use rst_common::{DIR_EGRESS, WIRE_SLOT_COUNTERS, WireEvent, wire_slot_index};

use crate::{
    classify::Family,
    export::{iftable::IfaceTable, snapshot::WireMaps},
    present::sample::{Presenter, Sample, addr, flags_str},
    sys::bpf::{percpu_array_sums, percpu_array_sums_n, percpu_sums},
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

/// Counters of one interface, at their index within a slot (`wire_slot_index(0, …)`).
pub const COUNTERS: usize = WIRE_SLOT_COUNTERS as usize;

pub const HELP: &str = "TCP RST segments seen on each monitored interface, by XDP on ingress and by TC on egress (exact, never sampled).";

/// Exact counts of each interface of an [`IfaceTable`], aligned with its
/// [`IfaceTable::ifaces`].
pub type Counts = Vec<[u64; COUNTERS]>;

/// Counts of RSTs no interface could be told for, by index within a slot.
pub type Unattributed = [u64; COUNTERS];

/// Reads the wire counters of the interfaces of `table` (the ones monitored now): the
/// slots in use, in one batched read, and the overflow keys of interfaces without a
/// slot, which are the only ones that have keys there (an interface given a slot keeps
/// it until it is gone, and its keys are removed then): when every monitored interface
/// has a slot, the overflow map is not read at all. Counters of an interface that is
/// gone are left out.
pub fn collect(maps: &WireMaps, ncpus: usize, table: &IfaceTable) -> Counts {
    let mut out = vec![[0u64; COUNTERS]; table.len()];
    let used = table
        .ifaces()
        .iter()
        .filter_map(|i| maps.assigned.get(&i.ifindex))
        .max()
        .map(|s| s + 1);
    let values = used
        .map(|n| percpu_array_sums_n(&maps.slots, n, ncpus))
        .unwrap_or_default();
    let mut unslotted = false;
    for (iface, counts) in table.ifaces().iter().zip(out.iter_mut()) {
        let Some(slot) = maps.assigned.get(&iface.ifindex) else {
            unslotted = true;
            continue;
        };
        if let Some(v) = values.get(*slot as usize) {
            *counts = *v;
        }
    }
    if unslotted {
        for (k, v) in percpu_sums(&maps.overflow, ncpus) {
            let (Some(fam), Some(pos)) = (Family::from_raw(k.family), table.position(k.ifindex))
            else {
                continue;
            };
            if maps.assigned.contains_key(&k.ifindex) {
                continue;
            }
            let i = wire_slot_index(
                0,
                k.direction,
                u32::from(fam == Family::Ipv6),
                u32::from(k.ack != 0),
            ) as usize;
            out[pos][i] += v;
        }
    }
    out
}

/// Reads the unattributed counters (non-zero only when the overflow map filled up).
pub fn collect_unattributed(maps: &WireMaps, ncpus: usize) -> Unattributed {
    let values = percpu_array_sums(&maps.unattributed, WIRE_SLOT_COUNTERS, ncpus);
    std::array::from_fn(|i| values.get(i).copied().unwrap_or(0))
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
