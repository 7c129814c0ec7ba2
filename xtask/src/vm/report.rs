//! The guest's console log: parsed by the `@@` markers of tests/vm/init, compared with
//! what each kernel must do, and printed as the per-kernel report.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    time::Duration,
};

use super::{Series, kernels::Kernel};

/// What one guest run printed, split by the `@@` markers of tests/vm/init.
#[derive(Debug, Default)]
pub(super) struct GuestReport {
    pub(super) release: Option<String>,
    /// Guest uptime (s) when /init started, i.e. the kernel's boot time.
    begin: Option<f64>,
    /// Output of each step, in order.
    steps: Vec<(String, Vec<String>)>,
    /// Exit codes by step.
    rcs: BTreeMap<String, i32>,
    /// Guest uptime at the start and at the end of each step.
    times: BTreeMap<String, (f64, Option<f64>)>,
    /// Metric lines printed by the run step.
    metrics: Vec<String>,
    pub(super) ended: bool,
}

impl GuestReport {
    pub(super) fn parse(log: &str) -> Self {
        let mut r = Self::default();
        let mut in_metrics = false;
        for raw in log.lines() {
            let plain = strip_ansi(raw);
            let line = plain.trim_end_matches('\r');
            let uptime = |w: Option<&str>| w.and_then(|t| t.parse::<f64>().ok());
            if let Some(rest) = line.strip_prefix("@@vm begin ") {
                let mut it = rest.split_whitespace();
                r.release = it.next().map(String::from);
                r.begin = uptime(it.next());
            } else if line.starts_with("@@vm end") {
                r.ended = true;
            } else if let Some(rest) = line.strip_prefix("@@step ") {
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap_or_default().to_string();
                if let Some(t) = uptime(it.next()) {
                    r.times.insert(name.clone(), (t, None));
                }
                r.steps.push((name, Vec::new()));
            } else if let Some(rest) = line.strip_prefix("@@rc ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(code)) = (it.next(), it.next()) {
                    r.rcs
                        .insert(name.to_string(), code.parse().unwrap_or(i32::MIN));
                    if let (Some(t), Some(span)) = (uptime(it.next()), r.times.get_mut(name)) {
                        span.1 = Some(t);
                    }
                }
            } else if line == "@@metrics begin" {
                in_metrics = true;
            } else if line == "@@metrics end" {
                in_metrics = false;
            } else if in_metrics {
                r.metrics.push(line.to_string());
            } else if let Some((_, out)) = r.steps.last_mut() {
                out.push(line.to_string());
            }
        }
        r
    }

    /// How long a step took in the guest, seconds.
    fn duration(&self, step: &str) -> Option<f64> {
        let (a, b) = self.times.get(step)?;
        Some(b.as_ref()? - a)
    }

    fn output(&self, step: &str) -> &[String] {
        self.steps
            .iter()
            .find(|(n, _)| n == step)
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[])
    }

    /// The selftest table rows: (id, family, side, expected, observed, verdict).
    fn selftest_rows(&self) -> Vec<SelftestRow> {
        self.output("selftest")
            .iter()
            .filter_map(|l| SelftestRow::parse(l))
            .collect()
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`; rstmon's log lines have them).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SelftestRow {
    id: String,
    family: String,
    side: String,
    expected: String,
    observed: String,
    ok: bool,
}

impl SelftestRow {
    fn parse(line: &str) -> Option<Self> {
        let w: Vec<&str> = line.split_whitespace().collect();
        // Six columns, then the workload and process selftest observed.
        if w.len() < 6
            || !w[0].starts_with('S')
            || !matches!(w[1], "ipv4" | "ipv6")
            || !matches!(w[2], "sender" | "receiver")
        {
            return None;
        }
        Some(Self {
            id: w[0].into(),
            family: w[1].into(),
            side: w[2].into(),
            expected: w[3].into(),
            observed: w[4].into(),
            ok: w[5] == "ok",
        })
    }
}

/// Sender rows a kernel before 6.10 cannot match, and what it shows instead
/// (docs/compatibility.md): there `tcp_v4/v6_send_reset` trace only full sockets, so
/// resets sent without a socket (S1, S5, S6) or by a time-wait mini-socket (S4) never
/// fire tcp_send_reset; and without the reason S3 (close with unread data) cannot be
/// told from other active resets.
fn known_limit(series: &Series, row: &SelftestRow) -> Option<&'static str> {
    if series.has_reason || row.side != "sender" {
        return None;
    }
    match (row.id.as_str(), row.observed.as_str()) {
        ("S1" | "S5" | "S6", "(none)") => Some("no tcp_send_reset without a socket before 6.10"),
        ("S3", "other") => Some("TCP_ABORT_ON_CLOSE needs the reason field (6.10+)"),
        ("S4", "(none)") => Some("time-wait resets do not fire tcp_send_reset before 6.10"),
        _ => None,
    }
}

/// Compares a guest run with what `series` must do; returns the problems.
pub(super) fn evaluate(series: &Series, r: &GuestReport) -> Vec<String> {
    let mut bad = Vec::new();
    if r.release.is_none() {
        bad.push("the guest never ran /init (see the console log)".into());
        return bad;
    }
    if !r.ended {
        bad.push("the guest did not reach the end of /init".into());
    }
    for s in ["modules", "check", "run"] {
        match r.rcs.get(s) {
            Some(0) => {}
            Some(c) => bad.push(format!("{s} exited {c}")),
            None => bad.push(format!("{s} did not finish")),
        }
    }
    let check = r.output("check");
    let reasons = check
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some("reasons"));
    match (series.has_reason, reasons.map(|l| l.starts_with("ok"))) {
        (true, Some(true)) | (false, Some(false)) => {}
        (_, None) => bad.push("check printed no `reasons` line".into()),
        (true, Some(false)) => bad.push("check: reasons not supported on a 6.10+ kernel".into()),
        (false, Some(true)) => bad.push("check: reasons claimed on a kernel without them".into()),
    }
    let line = |name: &str| {
        check
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
    };
    match line("coverage").map(|l| l.starts_with("ok")) {
        None => bad.push("check printed no `coverage` line".into()),
        Some(ok) if ok != series.has_reason => bad.push(format!(
            "check: coverage is {} on a kernel {} 6.10",
            if ok { "ok" } else { "not ok" },
            if series.has_reason { "of" } else { "before" }
        )),
        Some(_) => {}
    }
    match line("verdicts").map(|l| l.starts_with("ok")) {
        None => bad.push("check printed no `verdicts` line".into()),
        Some(ok) if ok != series.drop_reasons => bad.push(format!(
            "check: verdicts is {} on a kernel {} drop reasons in skb:kfree_skb",
            if ok { "ok" } else { "not ok" },
            if series.drop_reasons {
                "with"
            } else {
                "without"
            }
        )),
        Some(_) => {}
    }
    match line("features") {
        None => bad.push("check printed no `features` line".into()),
        Some(l) => {
            let without = l.split_once("not here:").map_or("", |(_, w)| w);
            if without.contains("coarse clock") == series.coarse_clock {
                bad.push(format!(
                    "check: the coarse clock is {} here: {l}",
                    if series.coarse_clock {
                        "missing"
                    } else {
                        "claimed"
                    }
                ));
            }
        }
    }
    if let Some(l) = check.iter().find(|l| l.starts_with("FAIL")) {
        bad.push(format!("check: {l}"));
    }
    let rows = r.selftest_rows();
    if rows.len() != 28 {
        bad.push(format!("selftest printed {} rows, not 28", rows.len()));
    }
    for row in rows.iter().filter(|r| !r.ok) {
        if known_limit(series, row).is_none() {
            bad.push(format!(
                "selftest {} {} {}: expected {}, observed {}",
                row.id, row.family, row.side, row.expected, row.observed
            ));
        }
    }
    match r.rcs.get("selftest") {
        None => bad.push("selftest did not finish".into()),
        Some(0) => {}
        Some(c) if rows.iter().any(|r| !r.ok) && *c == 1 => {}
        Some(c) => bad.push(format!("selftest exited {c}")),
    }
    let has = |prefix: &str, needle: &str| {
        r.metrics
            .iter()
            .any(|m| m.starts_with(prefix) && m.contains(needle) && !m.ends_with(" 0"))
    };
    if !has("rstmon_xdp_attached", "interface=\"vm0\"") {
        bad.push("run: rstmon_xdp_attached{interface=\"vm0\"} is not 1".into());
    }
    if !has("rstmon_wire_resets_total", "interface=\"vm0\"") {
        bad.push("run: no wire reset counted on vm0".into());
    }
    if !has("rstmon_resets_received_total", "cause=\"refused\"") {
        bad.push("run: no refused reset counted on the receiver side".into());
    }
    // TC egress on every kernel (tcx on 6.6+, a clsact classifier before).
    if !has("rstmon_tc_attached", "interface=\"vm0\"") {
        bad.push("run: rstmon_tc_attached{interface=\"vm0\"} is not 1".into());
    }
    let egress_wire = r.metrics.iter().any(|m| {
        m.starts_with("rstmon_wire_resets_total")
            && m.contains("interface=\"vm0\"")
            && m.contains("direction=\"egress\"")
            && !m.ends_with(" 0")
    });
    if !egress_wire {
        bad.push("run: no egress wire reset counted on vm0".into());
    }
    // The run's RSTs (one per family, to a closed port of the peer namespace's) are the
    // stack's: on 6.10+ announced by the send tracepoint (origin stack); before, told
    // from the egress view (stack_untraced; IPv6 ones leave without a socket, like
    // netfilter's, and are told by their flow label). None is a firewall's.
    let origin = if series.has_reason {
        "stack"
    } else {
        "stack_untraced"
    };
    for family in ["ipv4", "ipv6"] {
        let origin_family = format!("family=\"{family}\",origin=\"{origin}\"");
        if !has("rstmon_egress_resets_total", &origin_family) {
            bad.push(format!(
                "run: the {family} RST vma's stack sent is not of origin {origin}"
            ));
        }
        let no_listener = format!("cause=\"no_listener\",family=\"{family}\"");
        if !has("rstmon_resets_sent_total", &no_listener) {
            bad.push(format!(
                "run: the {family} RST vma's stack sent is not counted as no_listener"
            ));
        }
    }
    if has("rstmon_egress_resets_total", "origin=\"firewall_reject\"") {
        bad.push("run: an RST of the stack counted as firewall_reject".into());
    }
    bad
}

/// The columns of the tier's per-kernel table ([`table_row`]).
pub(super) const TABLE_HEADER: [&str; 9] = [
    "kernel",
    "release",
    "sender ok",
    "receiver ok",
    "known limits",
    "tp send/recv",
    "reasons",
    "coverage",
    "selftest/run",
];

/// One kernel's row of the table: the selftest rows that matched per side (of 14), the
/// mismatches that are known limits of the kernel, the kernel's own count of the two
/// tracepoints during selftest (ftrace), check's `reasons` and `coverage` verdicts and
/// the two long steps' durations.
pub(super) fn table_row(series: &Series, r: &GuestReport) -> [String; 9] {
    let rows = r.selftest_rows();
    let ok = |side: &str| {
        let n = rows.iter().filter(|x| x.side == side && x.ok).count();
        let all = rows.iter().filter(|x| x.side == side).count();
        format!("{n}/{all}")
    };
    let known = rows
        .iter()
        .filter(|x| !x.ok && known_limit(series, x).is_some())
        .count();
    // ftrace lines: "<event>[ fields]: <count>".
    let events = |ev: &str| -> u64 {
        r.output("ftrace")
            .iter()
            .filter(|l| l.split_whitespace().next().map(|w| w.trim_end_matches(':')) == Some(ev))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let verdict = |name: &str| {
        r.output("check")
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("-")
            .to_string()
    };
    let secs = |step: &str| {
        r.duration(step)
            .map_or("-".to_string(), |d| format!("{d:.0} s"))
    };
    [
        series.label.to_string(),
        r.release.clone().unwrap_or_else(|| "?".into()),
        ok("sender"),
        ok("receiver"),
        known.to_string(),
        format!(
            "{}/{}",
            events("tcp_send_reset"),
            events("tcp_receive_reset")
        ),
        verdict("reasons"),
        verdict("coverage"),
        format!("{}/{}", secs("selftest"), secs("run")),
    ]
}

/// Prints one kernel's report: each step's output and exit code, with the expected
/// selftest mismatches marked.
pub(super) fn print_report(series: &Series, kernel: &Kernel, r: &GuestReport, elapsed: Duration) {
    let mut o = io::stdout().lock();
    let _ = writeln!(
        o,
        "\n=== {} ({}, guest release {}): {:.0} s in qemu, /init started {} ===",
        series.label,
        kernel.package,
        r.release.as_deref().unwrap_or("?"),
        elapsed.as_secs_f64(),
        r.begin
            .map_or("never".to_string(), |b| format!("{b:.1} s after boot"))
    );
    for (name, lines) in &r.steps {
        let rc = r
            .rcs
            .get(name)
            .map_or("did not finish".to_string(), |c| format!("exit {c}"));
        let took = r
            .duration(name)
            .map(|d| format!(", {d:.1} s"))
            .unwrap_or_default();
        let _ = writeln!(o, "--- {name} ({rc}{took})");
        let shown: Vec<&String> = match name.as_str() {
            // The table and its summary; progress logging goes to the console log.
            "selftest" => lines
                .iter()
                .filter(|l| {
                    SelftestRow::parse(l).is_some()
                        || l.starts_with("id ")
                        || l.contains(" rows: ")
                        || l.starts_with("rstmon")
                })
                .collect(),
            _ => lines.iter().collect(),
        };
        for l in shown {
            let note = SelftestRow::parse(l)
                .filter(|row| !row.ok)
                .and_then(|row| known_limit(series, &row))
                .map(|n| format!("   (expected here: {n})"))
                .unwrap_or_default();
            let _ = writeln!(o, "{l}{note}");
        }
        if name == "run" {
            for m in &r.metrics {
                let _ = writeln!(o, "  {m}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::SERIES;

    #[test]
    fn console_log() {
        let log = "boot noise\r\n@@vm begin 6.1.0-56-cloud-amd64 1.50\n@@step check 1.60\n\
                   ok    kernel        x\nwarn  reasons       no reason field\n@@rc check 0 3.85\n\
                   @@step selftest\nid  fam   side      expected           observed           verdict\n\
                   S1  ipv4  sender    no_listener        (none)             MISMATCH\n\
                   S1  ipv4  receiver  refused            refused            ok\n@@rc selftest 1\n\
                   @@step run\n@@metrics begin\nrstmon_xdp_attached{interface=\"vm0\",mode=\"native\"} 1\n\
                   @@metrics end\n@@rc run 0\n@@vm end\n";
        let r = GuestReport::parse(log);
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.begin, Some(1.5));
        assert!((r.duration("check").unwrap() - 2.25).abs() < 1e-9);
        assert_eq!(r.duration("selftest"), None);
        assert!(r.ended);
        assert_eq!(r.rcs["check"], 0);
        assert_eq!(r.rcs["selftest"], 1);
        let rows = r.selftest_rows();
        assert_eq!(rows.len(), 2);
        assert!(!rows[0].ok && rows[1].ok);
        // 5.10 and 6.1 cannot see it; 6.12 must.
        assert!(known_limit(&SERIES[0], &rows[0]).is_some());
        assert!(known_limit(&SERIES[1], &rows[0]).is_some());
        assert!(known_limit(&SERIES[2], &rows[0]).is_none());
        assert_eq!(r.metrics.len(), 1);
        assert_eq!(
            strip_ansi("\x1b[2m2026\x1b[0m \x1b[33m WARN\x1b[0m x"),
            "2026  WARN x"
        );
    }

    /// The check lines a kernel must print: 5.10's log passes 5.10's expectations and
    /// fails 6.12's on each kernel-dependent line.
    #[test]
    fn check_expectations_per_kernel() {
        let log = "@@vm begin 5.10.0-32-cloud-amd64 1.0\n@@step check 1.1\n\
                   ok    kernel        5.10.0-32-cloud-amd64\n\
                   ok    features      ring buffer, XDP link; not here: coarse clock (the \
                   sampler reads the precise clock), tcx (TC attaches through a clsact qdisc)\n\
                   warn  reasons       tcp_send_reset has no reason argument\n\
                   warn  coverage      tcp_send_reset does not fire without a full socket\n\
                   warn  verdicts      skb:kfree_skb has no drop reason (before 5.17)\n\
                   @@rc check 0 2.0\n@@vm end\n";
        let r = GuestReport::parse(log);
        let check_problems = |s: &Series| -> Vec<String> {
            evaluate(s, &r)
                .into_iter()
                .filter(|p| p.starts_with("check"))
                .collect()
        };
        assert_eq!(check_problems(&SERIES[0]), Vec::<String>::new());
        let on_612 = check_problems(&SERIES[2]);
        assert_eq!(on_612.len(), 4, "{on_612:?}");
        assert!(on_612.iter().any(|p| p.contains("verdicts is not ok")));
        assert!(on_612.iter().any(|p| p.contains("coarse clock is missing")));
        assert!(on_612.iter().any(|p| p.contains("coverage is not ok")));
        // 6.1 has the coarse clock and drop reasons.
        let on_61 = check_problems(&SERIES[1]);
        assert_eq!(on_61.len(), 2, "{on_61:?}");
        assert!(on_61.iter().any(|p| p.contains("coarse clock is missing")));
        assert!(on_61.iter().any(|p| p.contains("verdicts is not ok")));
    }

    #[test]
    fn table_row_of_a_guest_run() {
        let log = "@@vm begin 5.10.0-32-cloud-amd64 1.0\n@@step check 1.0\n\
                   warn  reasons       x\nwarn  coverage      y\n@@rc check 0 2.0\n\
                   @@step selftest 2.0\n\
                   S1  ipv4  sender    no_listener        (none)             MISMATCH\n\
                   S1  ipv4  receiver  refused            refused            ok\n\
                   S2  ipv4  sender    linger_abort       linger_abort       ok\n\
                   S2  ipv4  receiver  peer_abort         other              MISMATCH\n\
                   @@rc selftest 1 42.4\n@@step ftrace 42.4\n\
                   tcp_receive_reset: 14\ntcp_send_reset state=TCP_CLOSE: 6\n\
                   tcp_send_reset family=AF_INET6 state=TCP_CLOSE: 3\nreasons: 0=X\n\
                   @@rc ftrace 0 42.5\n@@step run 42.5\n@@rc run 0 55.0\n@@vm end\n";
        let r = GuestReport::parse(log);
        let row = table_row(&SERIES[0], &r);
        assert_eq!(
            row,
            [
                "5.10",
                "5.10.0-32-cloud-amd64",
                "1/2",
                "1/2",
                "1",
                "9/14",
                "warn",
                "warn",
                "40 s/12 s"
            ]
            .map(String::from)
        );
        assert_eq!(row.len(), TABLE_HEADER.len());
    }
}
