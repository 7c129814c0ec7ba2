//! Ring-buffer records: length-checked decoding and presentation for `rstmon watch`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use rst_common::{
    EVENT_RECV, EVENT_SEND, EVENT_WIRE, FAMILY_IPV6, ORIGIN_SOCKET, ORIGIN_STATELESS, RecvEvent,
    SendEvent, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, WireEvent,
};
use serde::Serialize;

use crate::classify::{self, Family, state};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Wire(WireEvent),
    Send(SendEvent),
    Recv(RecvEvent),
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

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let kind = *buf.first().ok_or(DecodeError::Empty)?;
    match kind {
        EVENT_WIRE => read(buf, kind).map(Event::Wire),
        EVENT_SEND => read(buf, kind).map(Event::Send),
        EVENT_RECV => read(buf, kind).map(Event::Recv),
        k => Err(DecodeError::Kind(k)),
    }
}

pub fn addr(family: u8, raw: &[u8; 16]) -> IpAddr {
    if family == FAMILY_IPV6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

/// "RST|ACK"-style rendering of TCP flags; "-" for none.
pub fn flags_str(f: u8) -> String {
    if f == 0 {
        return "-".into();
    }
    let names = [
        (TCP_SYN, "SYN"),
        (TCP_FIN, "FIN"),
        (TCP_RST, "RST"),
        (TCP_PSH, "PSH"),
        (TCP_ACK, "ACK"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// One line of `rstmon watch`, also its JSON form.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Wall-clock time, RFC 3339 with microseconds.
    pub time: String,
    /// `sent` (this host's stack sent it), `received` (a socket accepted it), `wire`
    /// (seen on ingress by XDP).
    pub direction: &'static str,
    /// Cause label; `-` for wire samples (the socket-side hooks name those).
    pub cause: String,
    /// Kernel reset reason (sent only).
    pub reason: Option<String>,
    pub state: Option<&'static str>,
    pub family: &'static str,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    pub interface: Option<String>,
    /// Flags of the RST itself (wire samples).
    pub rst_flags: Option<String>,
    /// Received RSTs: `socket` (carried a timestamp: the peer's socket sent it),
    /// `stateless` (no timestamp on a timestamp connection) or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Flags of the segment that triggered a sent RST.
    pub trigger_flags: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_option: Option<bool>,
}

/// Context needed to present an event.
pub struct Presenter<'a> {
    pub reasons: &'a BTreeMap<u32, String>,
    pub ifnames: &'a BTreeMap<u32, String>,
    /// CLOCK_MONOTONIC → wall clock offset in ns.
    pub boot_offset_ns: i128,
}

impl Presenter<'_> {
    fn time(&self, ts_ns: u64) -> String {
        let wall = ts_ns as i128 + self.boot_offset_ns;
        rfc3339_micros(wall)
    }

    pub fn sample(&self, ev: &Event) -> Sample {
        match ev {
            Event::Wire(w) => Sample {
                time: self.time(w.ts_ns),
                direction: "wire",
                cause: "-".into(),
                reason: None,
                state: None,
                family: fam(w.family),
                src: addr(w.family, &w.saddr).to_string(),
                sport: w.sport,
                dst: addr(w.family, &w.daddr).to_string(),
                dport: w.dport,
                interface: Some(
                    self.ifnames
                        .get(&w.ifindex)
                        .cloned()
                        .unwrap_or_else(|| format!("if{}", w.ifindex)),
                ),
                rst_flags: Some(flags_str(w.tcp_flags)),
                origin: None,
                trigger_flags: None,
                seq: Some(w.seq),
                ack: Some(w.ack),
                window: Some(w.window),
                ttl: Some(w.ttl),
                payload_len: Some(w.payload_len),
                timestamp_option: Some(w.has_ts != 0),
            },
            Event::Send(s) => {
                let reason = self.reasons.get(&s.key.reason).map(String::as_str);
                let cause = classify::classify_send_key(self.reasons, &s.key);
                Sample {
                    time: self.time(s.ts_ns),
                    direction: "sent",
                    cause: cause.label().into(),
                    reason: Some(if classify::reason_unavailable(s.key.reason) {
                        "unavailable".into()
                    } else {
                        reason
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("#{}", s.key.reason))
                    }),
                    state: Some(state::name(s.key.state)),
                    family: fam(s.key.family),
                    src: addr(s.key.family, &s.saddr).to_string(),
                    sport: s.sport,
                    dst: addr(s.key.family, &s.daddr).to_string(),
                    dport: s.dport,
                    interface: None,
                    rst_flags: Some(sent_rst_flags(s.key.trig_flags).into()),
                    origin: None,
                    trigger_flags: Some(flags_str(s.key.trig_flags)),
                    seq: None,
                    ack: None,
                    window: None,
                    ttl: None,
                    payload_len: None,
                    timestamp_option: None,
                }
            }
            Event::Recv(r) => Sample {
                time: self.time(r.ts_ns),
                direction: "received",
                cause: classify::classify_recv(&r.key).label().into(),
                reason: None,
                state: Some(state::name(r.key.state)),
                family: fam(r.key.family),
                // The socket's view: local address first.
                src: addr(r.key.family, &r.saddr).to_string(),
                sport: r.sport,
                dst: addr(r.key.family, &r.daddr).to_string(),
                dport: r.dport,
                interface: None,
                rst_flags: None,
                origin: Some(match r.key.origin {
                    ORIGIN_SOCKET => "socket",
                    ORIGIN_STATELESS => "stateless",
                    _ => "unknown",
                }),
                trigger_flags: None,
                seq: None,
                ack: None,
                window: None,
                ttl: None,
                payload_len: None,
                timestamp_option: None,
            },
        }
    }
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

fn fam(f: u8) -> &'static str {
    Family::from_raw(f).map(Family::label).unwrap_or("unknown")
}

impl Sample {
    /// The human-readable `watch` line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {:<8} {:<17} {} {}:{} -> {}:{}",
            self.time,
            self.direction,
            self.cause,
            self.family,
            bracket(&self.src),
            self.sport,
            bracket(&self.dst),
            self.dport
        );
        if let Some(r) = &self.reason {
            s += &format!(" reason={r}");
        }
        if let Some(st) = self.state {
            s += &format!(" state={st}");
        }
        if let Some(i) = &self.interface {
            s += &format!(" if={i}");
        }
        if let Some(f) = &self.rst_flags {
            s += &format!(" flags={f}");
        }
        if let Some(o) = self.origin {
            s += &format!(" origin={o}");
        }
        if let Some(f) = &self.trigger_flags {
            s += &format!(" trigger={f}");
        }
        if let (Some(seq), Some(ack), Some(win)) = (self.seq, self.ack, self.window) {
            s += &format!(" seq={seq} ack={ack} win={win}");
        }
        if let Some(ttl) = self.ttl {
            s += &format!(" ttl={ttl}");
        }
        if let Some(l) = self.payload_len {
            s += &format!(" len={l}");
        }
        if self.timestamp_option == Some(true) {
            s += " ts";
        }
        s
    }
}

fn bracket(a: &str) -> String {
    if a.contains(':') {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

/// Offset to add to CLOCK_MONOTONIC (bpf_ktime_get_ns) to get Unix-epoch nanoseconds.
pub fn boot_offset_ns() -> i128 {
    let mut mono = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    wall - (mono.tv_sec as i128 * 1_000_000_000 + mono.tv_nsec as i128)
}

/// Formats Unix-epoch nanoseconds as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
pub fn rfc3339_micros(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let micros = (ns.rem_euclid(1_000_000_000) / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rst_common::{FAMILY_IPV4, RecvKey, SendKey};

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain repr(C) value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn send_event() -> SendEvent {
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
                len: 63,
                want: 64
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

    #[test]
    fn presents_a_sent_no_listener_reset() {
        let reasons = BTreeMap::from([(1, "NO_SOCKET".to_string())]);
        let ifnames = BTreeMap::new();
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: 0,
        };
        let s = p.sample(&Event::Send(send_event()));
        assert_eq!(s.cause, "no_listener");
        assert_eq!(s.reason.as_deref(), Some("NO_SOCKET"));
        assert_eq!(s.src, "10.0.0.1");
        assert_eq!(s.trigger_flags.as_deref(), Some("SYN"));
        assert_eq!(s.rst_flags.as_deref(), Some("RST|ACK"));
        assert_eq!(sent_rst_flags(TCP_PSH | TCP_ACK), "RST");
        assert_eq!(sent_rst_flags(0), "RST|ACK");
        assert_eq!(s.time, "1970-01-01T00:00:00.000000Z");
        assert!(s.line().contains("sent     no_listener"), "{}", s.line());
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
        };
        let s = p.sample(&Event::Recv(recv));
        assert_eq!(s.cause, "refused");
        assert_eq!(s.origin, Some("socket"));
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["direction"], "received");
        assert_eq!(json["state"], "SYN_SENT");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-22T00:46:35.123456Z
        assert_eq!(
            rfc3339_micros(1_795_308_395_123_456_789),
            "2026-11-22T00:46:35.123456Z"
        );
    }
}
