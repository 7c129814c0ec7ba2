//! Prometheus exposition. A [`Snapshot`] is read from the kernel maps at scrape time
//! and rendered; every known label value is present, at 0 if nothing happened yet.

use std::collections::BTreeMap;

use prometheus::{
    Encoder as _, TextEncoder,
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use crate::classify::{Family, RecvCause, SendCause};

/// `rst` or `rst_ack`.
pub const WIRE_FLAGS: [&str; 2] = ["rst", "rst_ack"];

/// Counters kept by the kernel programs (the STATS map), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub wire_ring_full: u64,
    pub wire_rate_limited: u64,
    pub trace_ring_full: u64,
    pub wire_sampled: u64,
    pub trace_sampled: u64,
    pub counter_map_full: u64,
    pub read_errors: u64,
}

/// Counters kept by the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserStats {
    pub wire_received: u64,
    pub trace_received: u64,
    pub decode_errors: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sent: BTreeMap<(SendCause, Family), u64>,
    pub received: BTreeMap<(RecvCause, Family), u64>,
    /// (interface, family, flags) → count.
    pub wire: BTreeMap<(String, Family, &'static str), u64>,
    /// Monitored interfaces and their XDP mode (`native` or `generic`).
    pub interfaces: Vec<(String, String)>,
    /// Tracing hooks and whether they are attached.
    pub hooks: Vec<(String, bool)>,
    /// Tracing hooks and how often the kernel skipped them (recursion protection).
    pub hook_misses: Vec<(String, u64)>,
    pub kernel: KernelStats,
    pub user: UserStats,
    pub reason_supported: bool,
    pub version: String,
    pub kernel_release: String,
}

/// One metric family under construction: samples are added with their labels and sorted
/// the way a prometheus `Registry` sorts them, so the exposition is stable.
struct FamilyBuilder {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    metrics: Vec<Metric>,
    label_names: &'static [&'static str],
    /// Positions of `label_names` in name order (the order of the exposition).
    order: Vec<usize>,
}

impl FamilyBuilder {
    fn new(
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        label_names: &'static [&'static str],
    ) -> Self {
        let mut order: Vec<usize> = (0..label_names.len()).collect();
        order.sort_by_key(|&i| label_names[i]);
        Self {
            name,
            help,
            kind,
            metrics: Vec::new(),
            label_names,
            order,
        }
    }

    /// Adds one sample; `values` are in the order of `label_names`.
    fn add(&mut self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.label_names.len());
        let labels = self
            .order
            .iter()
            .map(|&i| {
                let mut l = LabelPair::default();
                l.set_name(self.label_names[i].to_string());
                l.set_value(values[i].to_string());
                l
            })
            .collect();
        let mut m = Metric::from_label(labels);
        match self.kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.metrics.push(m);
    }

    /// Sorts the samples by label values, as a prometheus `Registry` does.
    fn build(mut self) -> MetricFamily {
        let by_values = |a: &Metric, b: &Metric| {
            a.get_label()
                .iter()
                .map(LabelPair::value)
                .cmp(b.get_label().iter().map(LabelPair::value))
        };
        if !self.metrics.is_sorted_by(|a, b| by_values(a, b).is_le()) {
            self.metrics.sort_by(by_values);
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.to_string());
        mf.set_help(self.help.to_string());
        mf.set_field_type(self.kind);
        mf.set_metric(self.metrics);
        mf
    }
}

impl Snapshot {
    /// Renders the Prometheus text exposition format. The families are built directly
    /// (no registry of metric vectors), which keeps a scrape of thousands of series cheap.
    pub fn render(&self) -> String {
        use MetricType::{COUNTER, GAUGE};
        let mut sent = FamilyBuilder::new(
            "rstmon_resets_sent_total",
            "TCP resets this host's TCP stack sent (all network namespaces), by the kernel's own reason.",
            COUNTER,
            &["cause", "family"],
        );
        let mut received = FamilyBuilder::new(
            "rstmon_resets_received_total",
            "TCP resets accepted by a socket on this host.",
            COUNTER,
            &["cause", "family"],
        );
        let mut wire = FamilyBuilder::new(
            "rstmon_wire_resets_total",
            "TCP RST segments seen by XDP on ingress of each monitored interface (exact, never sampled).",
            COUNTER,
            &["interface", "family", "flags"],
        );
        for fam in Family::ALL {
            for cause in SendCause::ALL {
                let v = self.sent.get(&(*cause, *fam)).copied().unwrap_or(0);
                sent.add(&[cause.label(), fam.label()], v as f64);
            }
            for cause in RecvCause::ALL {
                let v = self.received.get(&(*cause, *fam)).copied().unwrap_or(0);
                received.add(&[cause.label(), fam.label()], v as f64);
            }
        }
        // Every monitored interface's series at 0, then whatever the kernel counted (an
        // interface that went away keeps its series). Keyed in label-name order (family,
        // flags, interface), so the samples come out already sorted.
        let mut wire_values: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
        for (iface, _) in &self.interfaces {
            for fam in Family::ALL {
                for flags in WIRE_FLAGS {
                    wire_values.insert((fam.label(), flags, iface.as_str()), 0);
                }
            }
        }
        for ((iface, fam, flags), v) in &self.wire {
            *wire_values
                .entry((fam.label(), flags, iface.as_str()))
                .or_default() += *v;
        }
        for ((fam, flags, iface), v) in wire_values {
            wire.add(&[iface, fam, flags], v as f64);
        }

        let k = &self.kernel;
        let mut dropped = FamilyBuilder::new(
            "rstmon_samples_dropped_total",
            "Samples not delivered to user space: ring buffer full, or over the sampling rate limit. Counters stay exact.",
            COUNTER,
            &["source", "reason"],
        );
        dropped.add(&["wire", "ring_full"], k.wire_ring_full as f64);
        dropped.add(&["wire", "rate_limited"], k.wire_rate_limited as f64);
        dropped.add(&["trace", "ring_full"], k.trace_ring_full as f64);
        let mut submitted = FamilyBuilder::new(
            "rstmon_samples_submitted_total",
            "Samples the kernel programs put into the ring buffer.",
            COUNTER,
            &["source"],
        );
        submitted.add(&["wire"], k.wire_sampled as f64);
        submitted.add(&["trace"], k.trace_sampled as f64);
        let mut delivered = FamilyBuilder::new(
            "rstmon_samples_received_total",
            "Samples the daemon read from the ring buffer.",
            COUNTER,
            &["source"],
        );
        delivered.add(&["wire"], self.user.wire_received as f64);
        delivered.add(&["trace"], self.user.trace_received as f64);
        let mut errors = FamilyBuilder::new(
            "rstmon_errors_total",
            "Internal errors: counter map full, failed kernel reads, undecodable samples.",
            COUNTER,
            &["kind"],
        );
        errors.add(&["counter_map_full"], k.counter_map_full as f64);
        errors.add(&["kernel_read"], k.read_errors as f64);
        errors.add(&["decode"], self.user.decode_errors as f64);

        let mut attached = FamilyBuilder::new(
            "rstmon_xdp_attached",
            "1 for each interface with rstmon's XDP program attached, by XDP mode.",
            GAUGE,
            &["interface", "mode"],
        );
        for (iface, mode) in &self.interfaces {
            attached.add(&[iface.as_str(), mode.as_str()], 1.0);
        }
        let mut hooks = FamilyBuilder::new(
            "rstmon_hook_attached",
            "1 when a tracing hook is attached.",
            GAUGE,
            &["hook"],
        );
        for (name, ok) in &self.hooks {
            hooks.add(&[name.as_str()], f64::from(u8::from(*ok)));
        }
        let mut misses = FamilyBuilder::new(
            "rstmon_hook_missed_total",
            "Times the kernel did not run a tracing hook because another tracing program was running on the same CPU (bpf_prog_info.recursion_misses): resets not counted on that side.",
            COUNTER,
            &["hook"],
        );
        for (name, n) in &self.hook_misses {
            misses.add(&[name.as_str()], *n as f64);
        }
        let mut reason = FamilyBuilder::new(
            "rstmon_reset_reason_supported",
            "1 when the kernel's tcp_send_reset tracepoint reports a reset reason (Linux 6.10+); 0 means sent causes come from state and trigger only.",
            GAUGE,
            &[],
        );
        reason.add(&[], f64::from(u8::from(self.reason_supported)));
        let mut info = FamilyBuilder::new(
            "rstmon_build_info",
            "rstmon version and the running kernel; always 1.",
            GAUGE,
            &["version", "kernel"],
        );
        info.add(&[self.version.as_str(), self.kernel_release.as_str()], 1.0);

        let mut families: Vec<MetricFamily> = [
            sent, received, wire, dropped, submitted, delivered, errors, attached, hooks, misses,
            reason, info,
        ]
        .into_iter()
        .filter(|f| !f.metrics.is_empty())
        .map(FamilyBuilder::build)
        .collect();
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot {
            interfaces: vec![("veth0".into(), "native".into())],
            hooks: vec![
                ("tcp:tcp_send_reset".into(), true),
                ("tcp:tcp_receive_reset".into(), true),
            ],
            hook_misses: vec![
                ("tcp:tcp_send_reset".into(), 0),
                ("tcp:tcp_receive_reset".into(), 0),
            ],
            reason_supported: true,
            version: "0.1.0".into(),
            kernel_release: "6.18.0".into(),
            ..Default::default()
        };
        s.sent.insert((SendCause::NoListener, Family::Ipv4), 3);
        s.received.insert((RecvCause::Refused, Family::Ipv6), 2);
        s.wire.insert(("veth0".into(), Family::Ipv4, "rst_ack"), 3);
        s.kernel.wire_sampled = 3;
        s.user.wire_received = 3;
        s
    }

    /// The exposition is part of the contract: compare it with the golden file.
    /// Regenerate with `RSTMON_BLESS=1 cargo test -p rst-user golden`.
    #[test]
    fn golden_exposition() {
        let got = sample().render();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics.golden.txt");
        if std::env::var_os("RSTMON_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("golden file");
        assert_eq!(got, want, "exposition changed; bless it if intended");
    }

    #[test]
    fn every_cause_is_exported_at_zero() {
        let text = Snapshot::default().render();
        for fam in Family::ALL {
            for c in SendCause::ALL {
                let line = format!(
                    "rstmon_resets_sent_total{{cause=\"{}\",family=\"{}\"}} 0",
                    c.label(),
                    fam.label()
                );
                assert!(text.contains(&line), "missing {line}");
            }
            for c in RecvCause::ALL {
                let line = format!(
                    "rstmon_resets_received_total{{cause=\"{}\",family=\"{}\"}} 0",
                    c.label(),
                    fam.label()
                );
                assert!(text.contains(&line), "missing {line}");
            }
        }
    }

    #[test]
    fn wire_series_exist_per_interface_and_count() {
        let text = sample().render();
        assert!(text.contains(
            "rstmon_wire_resets_total{family=\"ipv4\",flags=\"rst_ack\",interface=\"veth0\"} 3"
        ));
        assert!(text.contains(
            "rstmon_wire_resets_total{family=\"ipv6\",flags=\"rst\",interface=\"veth0\"} 0"
        ));
        assert!(text.contains("rstmon_xdp_attached{interface=\"veth0\",mode=\"native\"} 1"));
    }
}
