//! The human-readable `watch` line, and wall-clock time for kernel timestamps.

use super::sample::Sample;

impl Sample {
    /// The human-readable `watch` line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {:<8} {:<17} {} {}:{} -> {}:{}",
            self.time,
            self.direction,
            self.cause.as_deref().unwrap_or("-"),
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
        if let Some(w) = &self.owner {
            s += &format!(" workload={}", w.workload);
            match (w.pid, &w.comm, w.pid_source) {
                (Some(pid), Some(comm), Some(how)) => {
                    s += &format!(" pid={pid} comm={comm} ({how})")
                }
                _ => s += " pid=-",
            }
            if let Some(uid) = w.uid {
                s += &format!(" uid={uid}");
            }
            if let Some(c) = &w.conn {
                let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}s"));
                s += &format!(
                    " age={} idle_rx={} idle_tx={} rx={}B acked={}B segs={}/{} unread={}B unsent={}B unacked={}B srtt={}us retrans={}",
                    secs(c.age_s),
                    secs(c.idle_rx_s),
                    secs(c.idle_tx_s),
                    c.bytes_received,
                    c.bytes_acked,
                    c.segs_in,
                    c.segs_out,
                    c.unread_bytes,
                    c.unsent_bytes,
                    c.unacked_bytes,
                    c.srtt_us,
                    c.retrans
                );
            }
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
