//! Resets a socket on this host accepted, from `tcp:tcp_receive_reset`: exact per
//! (state, family, origin), classified by the socket's state.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap};
use rst_common::{ORIGIN_SOCKET, ORIGIN_STATELESS, RecvEvent, RecvKey, state};

use crate::{
    classify::{self, Family, RecvCause},
    export::{family::FamilyBuilder, snapshot::Snapshot},
    present::sample::{Presenter, Sample, addr},
    sys::bpf::percpu_sums,
};

pub const METRIC: &str = "rstmon_resets_received_total";

/// (cause, family) → exact count.
pub type Counts = BTreeMap<(RecvCause, Family), u64>;

/// Reads and classifies the received-reset counters.
pub fn collect(map: &PerCpuHashMap<MapData, RecvKey, u64>, ncpus: usize) -> Counts {
    let mut out = Counts::new();
    for (k, v) in percpu_sums(map, ncpus) {
        let Some(fam) = Family::from_raw(k.family) else {
            continue;
        };
        *out.entry((classify::classify_recv(&k), fam)).or_default() += v;
    }
    out
}

/// `rstmon_resets_received_total`: every cause and family, at 0 when nothing was counted.
pub fn family(snap: &Snapshot) -> FamilyBuilder<'_> {
    super::cause_family(
        METRIC,
        "TCP resets accepted by a socket on this host.",
        RecvCause::ALL,
        RecvCause::label,
        &snap.received,
    )
}

/// `socket`, `stateless` or `unknown`: where the RST came from (see [`RecvKey::origin`]).
pub fn origin_label(origin: u8) -> &'static str {
    match origin {
        ORIGIN_SOCKET => "socket",
        ORIGIN_STATELESS => "stateless",
        _ => "unknown",
    }
}

/// A received-reset sample as a `watch` line.
pub fn present(p: &Presenter, r: &RecvEvent) -> Sample {
    Sample {
        time: p.time(r.ts_ns),
        direction: "received",
        cause: Some(classify::classify_recv(&r.key).label().into()),
        reason: None,
        state: Some(state::name(r.key.state)),
        family: Presenter::family(r.key.family),
        // The socket's view: local address first.
        src: addr(r.key.family, &r.saddr).to_string(),
        sport: r.sport,
        dst: addr(r.key.family, &r.daddr).to_string(),
        dport: r.dport,
        interface: None,
        rst_flags: None,
        origin: Some(origin_label(r.key.origin)),
        wire_direction: None,
        trigger_flags: None,
        seq: None,
        ack: None,
        window: None,
        ttl: None,
        payload_len: None,
        timestamp_option: None,
        verdict: Some("accepted"),
        suspect: None,
        peer_ttl: None,
        wire: None,
        owner: Some(p.who(&r.attr, &r.conn)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Event;
    use rst_common::{EVENT_RECV, FAMILY_IPV4};

    #[test]
    fn presents_a_refused_connect() {
        let reasons = BTreeMap::new();
        let ifnames = BTreeMap::new();
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: 0,
            names: None,
        };
        let recv = RecvEvent {
            kind: EVENT_RECV,
            _pad0: [0; 7],
            key: RecvKey {
                state: state::SYN_SENT,
                family: FAMILY_IPV4,
                origin: ORIGIN_SOCKET,
                _pad: [0; 5],
            },
            ts_ns: 1_500_000,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 1,
            dport: 2,
            _pad1: [0; 4],
            attr: Default::default(),
            conn: Default::default(),
        };
        let s = p.sample(&Event::Recv(recv)).unwrap();
        assert_eq!(s.cause.as_deref(), Some("refused"));
        assert_eq!(s.origin, Some("socket"));
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["direction"], "received");
        assert_eq!(json["state"], "SYN_SENT");
    }
}
