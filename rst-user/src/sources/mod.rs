//! The three sources of resets, each owning its counter key, its sample's decoding and
//! presentation, its classification and its metric family:
//!
//! * [`wire`]: RST segments seen on the wire, XDP on ingress and TC on egress
//!   (`WIRE_SLOTS`, `WIRE_COUNTERS`, [`WireEvent`]);
//! * [`egress`]: who made the RSTs that left (TC egress: `EGRESS_ORIGINS`, `FORWARDED`),
//!   which adds the sent resets no tracepoint sees and the forwarded ones;
//! * [`sent`]: resets this host's TCP stack sent (`tcp:tcp_send_reset`, [`SendEvent`]);
//! * [`received`]: resets a socket on this host accepted (`tcp:tcp_receive_reset`,
//!   [`RecvEvent`]);
//! * [`verdict`]: what the stack did with each ingress RST and the forged-reset
//!   signals (`VERDICT_COUNTERS`, [`VerdictEvent`]).

pub mod egress;
pub mod received;
pub mod sent;
pub mod verdict;
pub mod wire;
pub mod workload;

use std::collections::BTreeMap;

use rst_common::{
    EVENT_RECV, EVENT_SEND, EVENT_VERDICT, EVENT_WIRE, RecvEvent, SendEvent, VerdictEvent,
    WireEvent,
};

use crate::{
    classify::Family,
    export::family::{FamilyBuilder, Kind},
};

/// A `{cause, family}` counter family with every cause of `all` and both families, at 0
/// when nothing was counted: the shape of the sent and received families.
pub(crate) fn cause_family<'a, C: Copy + Ord>(
    name: &'static str,
    help: &'static str,
    all: &[C],
    label: fn(C) -> &'static str,
    counts: &BTreeMap<(C, Family), u64>,
) -> FamilyBuilder<'a> {
    let mut f = FamilyBuilder::new(name, help, Kind::Counter, &["cause", "family"]);
    for fam in Family::ALL {
        for cause in all {
            let v = counts.get(&(*cause, *fam)).copied().unwrap_or(0);
            f.add(&[label(*cause), fam.label()], v);
        }
    }
    f
}

/// One ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Wire(WireEvent),
    Send(SendEvent),
    Recv(RecvEvent),
    /// Not a sample of its own: joined to the wire and received samples of its RST.
    Verdict(VerdictEvent),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("record of kind {kind} is {len} bytes, expected {want}")]
    Length { kind: u8, len: usize, want: usize },
    #[error("unknown record kind {0}")]
    Kind(u8),
}

fn read<T: Copy>(buf: &[u8], kind: u8) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if buf.len() != want {
        return Err(DecodeError::Length {
            kind,
            len: buf.len(),
            want,
        });
    }
    // SAFETY: length checked; T is a repr(C) plain-integer struct valid for any bytes.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record, checking its kind and exact length.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let kind = *buf.first().ok_or(DecodeError::Empty)?;
    match kind {
        EVENT_WIRE => read(buf, kind).map(Event::Wire),
        EVENT_SEND => read(buf, kind).map(Event::Send),
        EVENT_RECV => read(buf, kind).map(Event::Recv),
        EVENT_VERDICT => read(buf, kind).map(Event::Verdict),
        k => Err(DecodeError::Kind(k)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rst_common::{FAMILY_IPV4, SendKey, TCP_SYN};

    pub(crate) fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    pub(crate) fn send_event() -> SendEvent {
        let mut saddr = [0; 16];
        saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut daddr = [0; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        SendEvent {
            kind: EVENT_SEND,
            _pad0: [0; 7],
            key: SendKey {
                reason: 1,
                state: 0,
                family: FAMILY_IPV4,
                trig_flags: TCP_SYN,
                bits: 0,
            },
            ts_ns: 0,
            saddr,
            daddr,
            sport: 9,
            dport: 40000,
            _pad1: [0; 4],
            attr: Default::default(),
            conn: Default::default(),
        }
    }

    #[test]
    fn decode_checks_length_and_kind() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 0, 0]), Err(DecodeError::Kind(9)));
        let mut b = bytes(&send_event());
        assert_eq!(decode(&b), Ok(Event::Send(send_event())));
        b.pop();
        assert_eq!(
            decode(&b),
            Err(DecodeError::Length {
                kind: EVENT_SEND,
                len: 167,
                want: 168
            })
        );
        assert!(matches!(
            decode(&[EVENT_WIRE; 10]),
            Err(DecodeError::Length { .. })
        ));
        assert!(matches!(
            decode(&[EVENT_RECV; 57]),
            Err(DecodeError::Length { .. })
        ));
    }
}
