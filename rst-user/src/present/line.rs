//! The human-readable `watch` line, and wall-clock time for kernel timestamps.
//!
//! The line is rendered from a sample's JSON object, so a sample read from the daemon's
//! stream prints exactly as one presented here.

use serde_json::Value;

use super::sample::Sample;

impl Sample {
    /// The human-readable `watch` line.
    pub fn line(&self) -> String {
        line(&serde_json::to_value(self).unwrap_or_default())
    }
}

/// The human-readable `watch` line of a sample's JSON object (`-` for a missing
/// string, such as the `null` cause of a wire sample).
pub fn line(v: &Value) -> String {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    let mut s = format!(
        "{} {:<8} {:<17} {} {}:{} -> {}:{}",
        text("time").unwrap_or("-"),
        text("direction").unwrap_or("-"),
        text("cause").unwrap_or("-"),
        text("family").unwrap_or("-"),
        bracket(text("src").unwrap_or("-")),
        num("sport").unwrap_or(0),
        bracket(text("dst").unwrap_or("-")),
        num("dport").unwrap_or(0)
    );
    for (key, name) in [
        ("reason", "reason"),
        ("state", "state"),
        ("interface", "if"),
        ("wire_direction", ""),
        ("rst_flags", "flags"),
        ("origin", "origin"),
        ("trigger_flags", "trigger"),
    ] {
        match text(key) {
            Some(x) if name.is_empty() => s += &format!(" {x}"),
            Some(x) => s += &format!(" {name}={x}"),
            None => {}
        }
    }
    if let (Some(seq), Some(ack), Some(win)) = (num("seq"), num("ack"), num("window")) {
        s += &format!(" seq={seq} ack={ack} win={win}");
    }
    if let Some(ttl) = num("ttl") {
        s += &format!(" ttl={ttl}");
    }
    if let Some(l) = num("payload_len") {
        s += &format!(" len={l}");
    }
    if v.get("timestamp_option").and_then(Value::as_bool) == Some(true) {
        s += " ts";
    }
    if let Some(x) = text("verdict") {
        s += &format!(" verdict={x}");
    }
    let suspect: Vec<&str> = v
        .get("suspect")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !suspect.is_empty() {
        s += &format!(" SUSPECT={}", suspect.join(","));
    }
    if let Some(w) = text("workload") {
        s += &format!(" workload={w}");
        match (num("pid"), text("comm"), text("pid_source")) {
            (Some(pid), Some(comm), Some(how)) => s += &format!(" pid={pid} comm={comm} ({how})"),
            _ => s += " pid=-",
        }
        if let Some(uid) = num("uid") {
            s += &format!(" uid={uid}");
        }
        if let Some(c) = v.get("conn").filter(|c| c.is_object()) {
            let secs = |k: &str| {
                c.get(k)
                    .and_then(Value::as_f64)
                    .map_or("-".to_string(), |v| format!("{v:.3}s"))
            };
            let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
            s += &format!(
                " age={} idle_rx={} idle_tx={} rx={}B acked={}B segs={}/{} unread={}B unsent={}B unacked={}B srtt={}us retrans={}",
                secs("age_s"),
                secs("idle_rx_s"),
                secs("idle_tx_s"),
                n("bytes_received"),
                n("bytes_acked"),
                n("segs_in"),
                n("segs_out"),
                n("unread_bytes"),
                n("unsent_bytes"),
                n("unacked_bytes"),
                n("srtt_us"),
                n("retrans")
            );
        }
    }
    s
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
    use crate::{present::sample::Presenter, sources::Event};
    use rst_common::{EVENT_WIRE, FAMILY_IPV6, TCP_ACK, TCP_RST, WireEvent};
    use std::collections::BTreeMap;

    /// A wire sample has no cause: `null` in JSON (never `"-"`), `-` in the line.
    #[test]
    fn wire_sample_cause_is_null_in_json_and_a_dash_in_the_line() {
        // SAFETY: WireEvent is plain integers, valid all-zero.
        let mut w: WireEvent = unsafe { std::mem::zeroed() };
        w.kind = EVENT_WIRE;
        w.family = FAMILY_IPV6;
        w.tcp_flags = TCP_RST | TCP_ACK;
        w.ttl = 64;
        w.ifindex = 3;
        w.saddr = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        w.daddr = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        w.sport = 9;
        w.dport = 40000;
        let (reasons, ifnames) = (BTreeMap::new(), BTreeMap::from([(3, "veth0".to_string())]));
        let p = Presenter {
            reasons: &reasons,
            ifnames: &ifnames,
            boot_offset_ns: 0,
            names: None,
        };
        let s = p.sample(&Event::Wire(w)).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["cause"], Value::Null, "{json}");
        assert!(!json.to_string().contains(r#""-""#), "{json}");
        assert_eq!(
            s.line(),
            "1970-01-01T00:00:00.000000Z wire     -                 ipv6 [fd00::1]:9 -> [fd00::2]:40000 \
             if=veth0 ingress flags=RST|ACK seq=0 ack=0 win=0 ttl=64 len=0"
        );
        assert_eq!(line(&json), s.line());
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
