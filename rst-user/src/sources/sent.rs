//! Resets this host's TCP stack sent, from `tcp:tcp_send_reset`: exact per
//! classification key, classified by the kernel's own reason.

use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap};
use rst_common::{SendEvent, SendKey, TCP_ACK, state};

use crate::{
    classify::{self, Family, SendCause},
    export::{family::FamilyBuilder, snapshot::Snapshot},
    present::sample::{Presenter, Sample, addr, flags_str},
    sys::bpf::percpu_sums,
};

pub const METRIC: &str = "rstmon_resets_sent_total";

/// (cause, family) → exact count.
pub type Counts = BTreeMap<(SendCause, Family), u64>;

/// Reads and classifies the sent-reset counters. `reasons` is the running kernel's
/// `enum sk_rst_reason` (number → name).
pub fn collect(
    map: &PerCpuHashMap<MapData, SendKey, u64>,
    ncpus: usize,
    reasons: &BTreeMap<u32, String>,
) -> Counts {
    let mut out = Counts::new();
    for (k, v) in percpu_sums(map, ncpus) {
        let Some(fam) = Family::from_raw(k.family) else {
            continue;
        };
        let cause = classify::classify_send_key(reasons, &k);
        *out.entry((cause, fam)).or_default() += v;
    }
    out
}

/// `rstmon_resets_sent_total`: every cause and family, at 0 when nothing was counted.
pub fn family(snap: &Snapshot) -> FamilyBuilder<'_> {
    super::cause_family(
        METRIC,
        "TCP resets this host's TCP stack sent (all network namespaces), by the kernel's own reason.",
        SendCause::ALL,
        SendCause::label,
        &snap.sent,
    )
}

/// Flags of an RST this host sent: a reset answering a segment that carried ACK is a
/// bare RST (seq = that ACK); every other reset, active ones included, is RST|ACK
/// (tcp_v4_send_reset, tcp_v6_send_reset, tcp_send_active_reset).
pub fn sent_rst_flags(trig_flags: u8) -> &'static str {
    if trig_flags != 0 && trig_flags & TCP_ACK != 0 {
        "RST"
    } else {
        "RST|ACK"
    }
}

/// A sent-reset sample as a `watch` line.
pub fn present(p: &Presenter, s: &SendEvent) -> Sample {
    let reason = p.reasons.get(&s.key.reason).map(String::as_str);
    let cause = classify::classify_send_key(p.reasons, &s.key);
    Sample {
        time: p.time(s.ts_ns),
        direction: "sent",
        cause: Some(cause.label().into()),
        reason: Some(if classify::reason_unavailable(s.key.reason) {
            "unavailable".into()
        } else {
            reason
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{}", s.key.reason))
        }),
        state: Some(state::name(s.key.state)),
        family: Presenter::family(s.key.family),
        src: addr(s.key.family, &s.saddr).to_string(),
        sport: s.sport,
        dst: addr(s.key.family, &s.daddr).to_string(),
        dport: s.dport,
        interface: None,
        rst_flags: Some(sent_rst_flags(s.key.trig_flags).into()),
        origin: None,
        wire_direction: None,
        // An active reset has no triggering segment: `null` in JSON, no `trigger=` in the line.
        trigger_flags: (s.key.trig_flags != rst_common::NO_TRIGGER)
            .then(|| flags_str(s.key.trig_flags)),
        seq: None,
        ack: None,
        window: None,
        ttl: None,
        payload_len: None,
        timestamp_option: None,
        verdict: None,
        suspect: None,
        peer_ttl: None,
        wire: None,
        owner: Some(p.who(&s.attr, &s.conn)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Event, tests::send_event};
    use rst_common::TCP_PSH;

    /// The sample of `e`, with reason 1 named `NO_SOCKET`.
    fn sample_of(e: SendEvent) -> Sample {
        let reasons = BTreeMap::from([(1, "NO_SOCKET".to_string())]);
        let ifnames = BTreeMap::new();
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: 0,
            names: None,
        };
        p.sample(&Event::Send(e)).unwrap()
    }

    #[test]
    fn presents_a_sent_no_listener_reset() {
        let s = sample_of(send_event());
        assert_eq!(s.cause.as_deref(), Some("no_listener"));
        assert_eq!(s.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(s.src, "10.0.0.1");
        assert_eq!(s.trigger_flags.as_deref(), Some("SYN"));
        assert_eq!(s.rst_flags.as_deref(), Some("RST|ACK"));
        assert_eq!(sent_rst_flags(TCP_PSH | TCP_ACK), "RST");
        assert_eq!(sent_rst_flags(0), "RST|ACK");
        assert_eq!(s.time, "1970-01-01T00:00:00.000000Z");
        assert!(s.line().contains("sent     no_listener"), "{}", s.line());
    }

    #[test]
    fn an_active_reset_has_no_trigger_flags() {
        let mut e = send_event();
        e.key.trig_flags = rst_common::NO_TRIGGER;
        let s = sample_of(e);
        assert_eq!(s.trigger_flags, None);
        assert_eq!(s.rst_flags.as_deref(), Some("RST|ACK"));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["trigger_flags"].is_null(), "{json}");
        assert!(!json.to_string().contains(r#""-""#), "{json}");
    }
}
