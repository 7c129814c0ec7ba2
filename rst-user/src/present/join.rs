//! Puts the kernel's verdict on the samples of `watch`, where they are encoded (the
//! daemon's stream and the standalone printer both go through [`crate::stream::Encoder`]).
//!
//! The kernel made the join (docs/classification.md); this brings its records of one RST
//! together:
//!
//! * an ingress wire sample is held until the verdict record of the same RST (same
//!   folded addresses, ports and sequence number) arrives. The kernel writes that record
//!   in the softirq that processes the frame, after the wire sample in the ring buffer;
//!   once the ring has been drained past [`HOLD_NS`] after the wire sample's timestamp
//!   without one, the RST was neither accepted nor challenged: `ignored`;
//! * a received reset follows its accepted verdict in the ring buffer (the same
//!   handler writes both): it gets the verdict's signals and, when the wire sample was
//!   taken, that RST's wire fields;
//! * a later `alive_after_reset` record repeats the received reset's sample with the
//!   signal added.
//!
//! Egress wire samples are never held.

use std::collections::VecDeque;

use rst_common::{
    ALIVE_WINDOW_NS, DIR_EGRESS, FAMILY_IPV4, VERDICT_ACCEPTED, VerdictEvent, WireEvent, addr_fold,
    ports_key,
};
use serde_json::Value;
use tracing::warn;

use super::sample::{Presenter, WireFields, flags_str};
use crate::sources::{
    Event,
    verdict::{SIGNALS, signal_labels, verdict_label},
};

/// How long after its wire sample an RST's verdict record is certainly in the ring
/// buffer (it is written microseconds after, in the same softirq).
pub const HOLD_NS: u64 = 100_000_000;
/// Entries kept for the received resets that follow and for late signals, at most.
const KEEP: usize = 4096;

/// Folded addresses, ports (remote << 16 | local), sequence number.
type Key = (u32, u32, u32);

struct Held {
    ts_ns: u64,
    key: Key,
    value: Value,
    fields: WireFields,
}

struct Accepted {
    ts_ns: u64,
    conn: (u32, u32),
    suspect: Vec<&'static str>,
    peer_ttl: u8,
    fields: Option<WireFields>,
}

/// The pending halves of joins.
#[derive(Default)]
pub struct Joiner {
    held: VecDeque<Held>,
    /// Accepted verdicts, for the received-reset sample that follows.
    accepted: VecDeque<Accepted>,
    /// Received-reset samples of accepted RSTs, for a late `alive_after_reset`.
    shown: VecDeque<(u64, (u32, u32), Value)>,
}

fn wire_key(w: &WireEvent) -> Key {
    (
        addr_fold(&w.saddr, &w.daddr),
        ports_key(w.sport, w.dport),
        w.seq,
    )
}

fn fields(p: &Presenter, w: &WireEvent) -> WireFields {
    WireFields {
        interface: p.ifname(w.ifindex),
        ttl: w.ttl,
        ip_id: (w.family == FAMILY_IPV4).then_some(w.ip_id),
        seq: w.seq,
        ack: w.ack,
        window: w.window,
        rst_flags: flags_str(w.tcp_flags),
        timestamp_option: w.has_ts != 0,
        payload_len: w.payload_len,
    }
}

fn to_value<T: serde::Serialize>(s: T) -> Option<Value> {
    serde_json::to_value(s)
        .inspect_err(|e| warn!("sample not serializable: {e}"))
        .ok()
}

fn set(v: &mut Value, key: &str, x: impl serde::Serialize) {
    if let (Some(o), Some(x)) = (v.as_object_mut(), to_value(x)) {
        o.insert(key.into(), x);
    }
}

fn put_verdict(v: &mut Value, verdict: &'static str, suspect: &[&'static str], peer_ttl: u8) {
    set(v, "verdict", verdict);
    set(v, "suspect", suspect);
    if peer_ttl != 0 {
        set(v, "peer_ttl", peer_ttl);
    }
}

fn bounded<T>(q: &mut VecDeque<T>) {
    while q.len() > KEEP {
        q.pop_front();
    }
}

impl Joiner {
    /// The samples `ev` completes (possibly none, possibly several).
    pub fn push(&mut self, p: &Presenter, ev: &Event) -> Vec<Value> {
        match ev {
            Event::Wire(w) if w.direction != DIR_EGRESS => {
                if let Some(value) = p.sample(ev).and_then(to_value) {
                    self.held.push_back(Held {
                        ts_ns: w.ts_ns,
                        key: wire_key(w),
                        value,
                        fields: fields(p, w),
                    });
                }
                Vec::new()
            }
            Event::Verdict(v) if v.late != 0 => self.late(v),
            Event::Verdict(v) => self.verdict(v),
            Event::Recv(r) => {
                let Some(mut value) = p.sample(ev).and_then(to_value) else {
                    return Vec::new();
                };
                // The socket's view: local first.
                let conn = (addr_fold(&r.saddr, &r.daddr), ports_key(r.dport, r.sport));
                if let Some(i) = self.accepted.iter().rposition(|a| a.conn == conn) {
                    let a = self.accepted.remove(i).expect("index in range");
                    put_verdict(&mut value, "accepted", &a.suspect, a.peer_ttl);
                    if let Some(f) = a.fields {
                        set(&mut value, "wire", f);
                    }
                    self.shown.push_back((a.ts_ns, conn, value.clone()));
                    bounded(&mut self.shown);
                }
                vec![value]
            }
            _ => p.sample(ev).and_then(to_value).into_iter().collect(),
        }
    }

    fn verdict(&mut self, v: &VerdictEvent) -> Vec<Value> {
        let key = (v.fold, v.ports, v.seq);
        let suspect = signal_labels(v.suspect);
        let mut out = Vec::new();
        let mut wire = None;
        if let Some(i) = self.held.iter().position(|h| h.key == key) {
            let mut h = self.held.remove(i).expect("index in range");
            put_verdict(&mut h.value, verdict_label(v.verdict), &suspect, v.peer_ttl);
            wire = Some(h.fields);
            out.push(h.value);
        }
        if v.verdict == VERDICT_ACCEPTED {
            self.accepted.push_back(Accepted {
                ts_ns: v.ts_ns,
                conn: (v.fold, v.ports),
                suspect,
                peer_ttl: v.peer_ttl,
                fields: wire,
            });
            bounded(&mut self.accepted);
        }
        out
    }

    /// A signal raised after the verdict: the received reset's sample once more, with it.
    fn late(&mut self, v: &VerdictEvent) -> Vec<Value> {
        let conn = (v.fold, v.ports);
        let Some((_, _, shown)) = self.shown.iter().rev().find(|(_, c, _)| *c == conn) else {
            return Vec::new();
        };
        let mut value = shown.clone();
        let mut suspect: Vec<&'static str> = value
            .get("suspect")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| SIGNALS.iter().map(|(_, l)| *l).find(|l| *l == s))
                    .collect()
            })
            .unwrap_or_default();
        for s in signal_labels(v.suspect) {
            if !suspect.contains(&s) {
                suspect.push(s);
            }
        }
        set(&mut value, "suspect", suspect);
        vec![value]
    }

    /// After a drain of the ring buffer that began at `drained_ns` (CLOCK_MONOTONIC):
    /// the wire samples whose verdict would have been read by then, as `ignored`.
    pub fn drained(&mut self, drained_ns: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let due = |ts: u64| ts.saturating_add(HOLD_NS) < drained_ns;
        let mut kept = VecDeque::with_capacity(self.held.len());
        for mut h in self.held.drain(..) {
            if due(h.ts_ns) {
                put_verdict(&mut h.value, "ignored", &[], 0);
                out.push(h.value);
            } else {
                kept.push_back(h);
            }
        }
        self.held = kept;
        self.accepted.retain(|a| !due(a.ts_ns));
        self.shown
            .retain(|(ts, _, _)| ts.saturating_add(ALIVE_WINDOW_NS) >= drained_ns);
        out
    }
}

/// CLOCK_MONOTONIC in ns (the clock of the kernel's timestamps).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rst_common::{
        Attribution, ConnInfo, EVENT_RECV, EVENT_VERDICT, EVENT_WIRE, ORIGIN_STATELESS, RecvEvent,
        RecvKey, SIGNAL_ALIVE_AFTER_RESET, SIGNAL_TTL, TCP_RST, VERDICT_CHALLENGED, state,
    };

    use super::*;

    fn wire(direction: u8) -> WireEvent {
        let mut saddr = [0; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        WireEvent {
            kind: EVENT_WIRE,
            family: FAMILY_IPV4,
            tcp_flags: TCP_RST,
            ttl: 7,
            ifindex: 3,
            ts_ns: 1_000,
            saddr,
            daddr,
            sport: 80,
            dport: 40000,
            seq: 1000,
            ack: 0,
            window: 0,
            ip_id: 99,
            payload_len: 0,
            has_ts: 0,
            vlan_depth: 0,
            direction,
            origin: 0,
            _pad: [0; 2],
        }
    }

    fn verdict_of(w: &WireEvent, verdict: u8, suspect: u8, late: u8) -> VerdictEvent {
        VerdictEvent {
            kind: EVENT_VERDICT,
            verdict,
            suspect,
            family: w.family,
            ttl: w.ttl,
            peer_ttl: 64,
            sampled: 1,
            late,
            ifindex: w.ifindex,
            fold: addr_fold(&w.saddr, &w.daddr),
            ports: ports_key(w.sport, w.dport),
            seq: w.seq,
            ts_ns: 2_000,
        }
    }

    fn with<T>(f: impl FnOnce(&Presenter) -> T) -> T {
        let (reasons, ifnames) = (BTreeMap::new(), BTreeMap::new());
        f(&Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: 0,
            names: None,
        })
    }

    #[test]
    fn ingress_waits_for_its_verdict_egress_does_not() {
        with(|p| {
            let mut j = Joiner::default();
            let w = wire(rst_common::DIR_INGRESS);
            assert!(j.push(p, &Event::Wire(w)).is_empty());
            let out = j.push(p, &Event::Verdict(verdict_of(&w, VERDICT_CHALLENGED, 0, 0)));
            assert_eq!(out.len(), 1);
            assert_eq!(out[0]["verdict"], "challenged");
            assert_eq!(out[0]["suspect"], serde_json::json!([]));
            assert_eq!(out[0]["peer_ttl"], 64);
            // Without a verdict once the ring was drained HOLD_NS later: ignored.
            assert!(j.push(p, &Event::Wire(w)).is_empty());
            assert!(j.drained(w.ts_ns + HOLD_NS).is_empty());
            let out = j.drained(w.ts_ns + HOLD_NS + 1);
            assert_eq!(out[0]["verdict"], "ignored");
            // Egress: at once, no verdict.
            let out = j.push(p, &Event::Wire(wire(DIR_EGRESS)));
            assert_eq!(out.len(), 1);
            assert!(out[0].get("verdict").is_none());
        })
    }

    #[test]
    fn received_reset_carries_the_wire_fields_it_accepted_and_late_signals() {
        with(|p| {
            let mut j = Joiner::default();
            let w = wire(rst_common::DIR_INGRESS);
            j.push(p, &Event::Wire(w));
            let out = j.push(
                p,
                &Event::Verdict(verdict_of(&w, VERDICT_ACCEPTED, 1 << SIGNAL_TTL, 0)),
            );
            assert_eq!(out[0]["suspect"][0], "ttl");
            let r = RecvEvent {
                kind: EVENT_RECV,
                _pad0: [0; 7],
                key: RecvKey {
                    state: state::ESTABLISHED,
                    family: FAMILY_IPV4,
                    origin: ORIGIN_STATELESS,
                    _pad: [0; 5],
                },
                ts_ns: 0,
                _pad1: [0; 4],
                saddr: w.daddr,
                daddr: w.saddr,
                sport: w.dport,
                dport: w.sport,
                attr: Attribution::default(),
                conn: ConnInfo::default(),
            };
            let out = j.push(p, &Event::Recv(r));
            let json = &out[0];
            assert_eq!(json["verdict"], "accepted");
            assert_eq!(json["suspect"][0], "ttl");
            assert_eq!(json["wire"]["ttl"], 7);
            assert_eq!(json["wire"]["ip_id"], 99);
            assert_eq!(json["wire"]["seq"], 1000);
            let out = j.push(
                p,
                &Event::Verdict(verdict_of(
                    &w,
                    VERDICT_ACCEPTED,
                    1 << SIGNAL_ALIVE_AFTER_RESET,
                    1,
                )),
            );
            assert_eq!(out.len(), 1);
            assert_eq!(
                out[0]["suspect"],
                serde_json::json!(["ttl", "alive_after_reset"])
            );
            assert_eq!(out[0]["direction"], "received");
        })
    }
}
