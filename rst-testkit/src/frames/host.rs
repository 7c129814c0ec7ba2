//! The real parser ([`rst_common::parse`]) run on a byte slice, the way the XDP program
//! runs it on packet memory.

use rst_common::{
    EVENT_WIRE, WireEvent,
    parse::{Rst, fill_sample, parse_rst},
};

/// [`parse_rst`] on a byte slice.
pub fn parse(frame: &[u8]) -> Option<Rst> {
    let start = frame.as_ptr() as usize;
    parse_rst(start, start + frame.len())
}

/// The sample the XDP program submits for `frame`, as [`fill_sample`] fills it
/// (`kind` [`EVENT_WIRE`]; `ifindex`, `ts_ns` and padding 0), or `None` if the
/// frame is not an RST.
pub fn sample(frame: &[u8]) -> Option<WireEvent> {
    let rst = parse(frame)?;
    let start = frame.as_ptr() as usize;
    let mut ev = empty_event();
    ev.kind = EVENT_WIRE;
    fill_sample(start, start + frame.len(), &rst, &mut ev)?;
    Some(ev)
}

/// A [`WireEvent`] with every field 0.
pub const fn empty_event() -> WireEvent {
    WireEvent {
        kind: 0,
        family: 0,
        tcp_flags: 0,
        ttl: 0,
        ifindex: 0,
        ts_ns: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        window: 0,
        ip_id: 0,
        payload_len: 0,
        has_ts: 0,
        vlan_depth: 0,
        direction: 0,
        origin: 0,
        _pad: [0; 2],
    }
}
