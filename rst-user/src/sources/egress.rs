//! Who made each RST that left a monitored interface, from the TC egress program:
//! exact per (origin, family, flags) in `EGRESS_ORIGINS`, forwarded ones also per
//! interface in `FORWARDED`.
//!
//! What this adds to the other sources: the sent resets the TCP stack's tracepoint
//! never sees — netfilter's (`firewall_reject`), user programs' through raw or packet
//! sockets (`raw_socket`), and on kernels whose `tcp_send_reset` misses resets without a
//! socket, the control socket's (`no_listener` / `no_connection` from the wire) — and
//! `rstmon_forwarded_resets_total`. Resets the tracepoint announced (`stack`) are
//! counted there, never here.

use std::collections::BTreeMap;

use rst_common::{
    EGRESS_FIREWALL, EGRESS_FORWARDED, EGRESS_ORIGIN_COUNTERS, EGRESS_ORIGINS, EGRESS_RAW_SOCKET,
    EGRESS_STACK, EGRESS_STACK_UNTRACED, EGRESS_UNMATCHED, egress_origin_index,
};

use crate::{
    classify::{self, Family, SendCause},
    export::{
        family::{FamilyBuilder, Kind},
        iftable::IfaceTable,
        snapshot::{EgressMaps, Snapshot},
    },
    sys::bpf::{percpu_array_sums, percpu_sums},
};

pub const METRIC: &str = "rstmon_egress_resets_total";
pub const FORWARDED_METRIC: &str = "rstmon_forwarded_resets_total";
pub const FORWARDED_HELP: &str = "TCP RSTs routed or bridged through this host (received on another interface, not made here), counted at egress of each monitored interface.";

/// `origin` label values, indexed by `EGRESS_*`.
pub const ORIGINS: [(u8, &str); EGRESS_ORIGINS as usize] = [
    (EGRESS_STACK, "stack"),
    (EGRESS_STACK_UNTRACED, "stack_untraced"),
    (EGRESS_FIREWALL, "firewall_reject"),
    (EGRESS_RAW_SOCKET, "raw_socket"),
    (EGRESS_FORWARDED, "forwarded"),
    (EGRESS_UNMATCHED, "unmatched"),
];

/// The `origin` label of an `EGRESS_*` value.
pub fn origin_label(origin: u8) -> Option<&'static str> {
    ORIGINS.iter().find(|(o, _)| *o == origin).map(|(_, l)| *l)
}

/// What the egress maps say at one scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// (origin, family, ack) → exact count.
    pub origins: BTreeMap<(u8, Family, bool), u64>,
    /// Forwarded RSTs of each interface of the [`IfaceTable`], aligned with its
    /// [`IfaceTable::ifaces`], by family (IPv4, IPv6).
    pub forwarded: Vec<[u64; 2]>,
    /// Forwarded RSTs no interface could be told for, by family.
    pub forwarded_unattributed: [u64; 2],
}

impl Counts {
    /// The sent resets this source adds to `rstmon_resets_sent_total`
    /// ([`classify::classify_egress`]).
    pub fn sent(&self) -> BTreeMap<(SendCause, Family), u64> {
        let mut out = BTreeMap::new();
        for ((origin, fam, ack), v) in &self.origins {
            if let Some(cause) = classify::classify_egress(*origin, *ack) {
                *out.entry((cause, *fam)).or_default() += v;
            }
        }
        out
    }
}

/// Reads the egress counters; forwarded ones of the interfaces of `table` only.
pub fn collect(maps: &EgressMaps, ncpus: usize, table: &IfaceTable) -> Counts {
    let mut out = Counts::default();
    let values = percpu_array_sums(&maps.origins, EGRESS_ORIGIN_COUNTERS, ncpus);
    for (origin, _) in ORIGINS {
        for (v6, fam) in Family::ALL.iter().enumerate() {
            for ack in [false, true] {
                let i = egress_origin_index(origin, v6 as u32, u32::from(ack)) as usize;
                let v = values.get(i).copied().unwrap_or(0);
                out.origins.insert((origin, *fam, ack), v);
            }
        }
    }
    out.forwarded = vec![[0; 2]; table.len()];
    // The TC program counts a forwarded RST in `EGRESS_ORIGINS` before it adds it to
    // `FORWARDED`: while no forwarded RST was ever counted there the map has no key, and
    // its scan (every bucket of a 65 536-bucket map) is skipped.
    let any_forwarded = out
        .origins
        .iter()
        .any(|((origin, _, _), v)| *origin == EGRESS_FORWARDED && *v > 0);
    let keys = if any_forwarded {
        percpu_sums(&maps.forwarded, ncpus)
    } else {
        Vec::new()
    };
    for (k, v) in keys {
        let (Some(fam), Some(pos)) = (Family::from_raw(k.family), table.position(k.ifindex)) else {
            continue;
        };
        out.forwarded[pos][usize::from(fam == Family::Ipv6)] += v;
    }
    let un = percpu_array_sums(&maps.forwarded_unattributed, 2, ncpus);
    out.forwarded_unattributed = std::array::from_fn(|i| un.get(i).copied().unwrap_or(0));
    out
}

/// `rstmon_egress_resets_total{origin, family}`: every origin and family, at 0 when
/// nothing was counted.
pub fn family(snap: &Snapshot) -> FamilyBuilder<'_> {
    let mut f = FamilyBuilder::new(
        METRIC,
        "TCP RSTs that left a monitored interface (TC egress), by who made them: stack (made by the TCP stack and counted as sent by tcp_send_reset), stack_untraced (the TCP stack's control socket on a kernel whose tracepoint misses resets without a socket: counted as sent from the wire), firewall_reject, raw_socket, forwarded, unmatched (a TCP mini-socket's RST no tracepoint announced).",
        Kind::Counter,
        &["origin", "family"],
    );
    for (origin, label) in ORIGINS {
        for fam in Family::ALL {
            let v: u64 = [false, true]
                .iter()
                .filter_map(|ack| snap.egress.origins.get(&(origin, *fam, *ack)))
                .sum();
            f.add(&[label, fam.label()], v);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_become_sent_causes_only_where_no_tracepoint_counted_them() {
        let mut c = Counts::default();
        for (origin, _) in ORIGINS {
            c.origins.insert((origin, Family::Ipv4, true), 1);
            c.origins.insert((origin, Family::Ipv4, false), 10);
        }
        let sent = c.sent();
        assert_eq!(
            sent,
            BTreeMap::from([
                ((SendCause::FirewallReject, Family::Ipv4), 11),
                ((SendCause::RawSocket, Family::Ipv4), 11),
                ((SendCause::NoListener, Family::Ipv4), 1),
                ((SendCause::NoConnection, Family::Ipv4), 10),
            ])
        );
        assert_eq!(origin_label(EGRESS_FORWARDED), Some("forwarded"));
        assert_eq!(origin_label(99), None);
    }
}
