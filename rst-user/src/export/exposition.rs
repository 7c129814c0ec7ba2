//! The Prometheus text exposition of a [`Snapshot`]. Every known label value is
//! present, at 0 if nothing happened yet.

use rst_common::Stat;

use super::{
    family::{FamilyBuilder, Kind},
    iftable, info,
    snapshot::Snapshot,
};
use crate::{attach::controller::SKIP_REASONS, sources};

/// Why a scrape could not be rendered (answered with HTTP 500).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Reading the maps or writing the text panicked, or its task was cancelled.
    #[error("rendering failed: {0}")]
    Failed(String),
}

impl Snapshot {
    /// Renders the Prometheus text exposition format. The families are built directly
    /// (no registry of metric vectors), which keeps a scrape of thousands of series cheap.
    pub fn render(&self) -> Result<String, RenderError> {
        use Kind::{Counter as COUNTER, Gauge as GAUGE};
        let mut families = vec![
            sources::sent::family(self),
            sources::received::family(self),
            sources::egress::family(self),
            sources::workload::family(&self.workloads),
            sources::workload::overflow_family(&self.workloads),
        ];

        let k = &self.kernel;
        let mut dropped = FamilyBuilder::new(
            "rstmon_samples_dropped_total",
            "Samples not delivered to user space: ring buffer full, or over the sampling rate limit. Counters stay exact.",
            COUNTER,
            &["source", "reason"],
        );
        let mut submitted = FamilyBuilder::new(
            "rstmon_samples_submitted_total",
            "Samples the kernel programs put into the ring buffer.",
            COUNTER,
            &["source"],
        );
        let mut errors = FamilyBuilder::new(
            "rstmon_errors_total",
            "Internal errors: counter map full, failed kernel reads, undecodable samples.",
            COUNTER,
            &["kind"],
        );
        for s in Stat::ALL {
            let (name, labels) = s.series();
            // Stat::series names one of these three families.
            let fam = if name == dropped.name() {
                &mut dropped
            } else if name == submitted.name() {
                &mut submitted
            } else {
                &mut errors
            };
            let values: Vec<&str> = labels.iter().map(|(_, v)| *v).collect();
            fam.add(&values, k.get(s));
        }
        errors.add(&["decode"], self.user.decode_errors);
        let mut delivered = FamilyBuilder::new(
            "rstmon_samples_received_total",
            "Samples the daemon read from the ring buffer.",
            COUNTER,
            &["source"],
        );
        delivered.add(&["wire"], self.user.wire_received);
        delivered.add(&["trace"], self.user.trace_received);
        delivered.add(&["verdict"], self.user.verdict_received);

        let mut skipped = FamilyBuilder::new(
            "rstmon_interface_skipped_total",
            "Interfaces matching the selection that rstmon left alone: another XDP program was attached (foreign_xdp), or attaching failed (attach_failed).",
            COUNTER,
            &["reason"],
        );
        for reason in SKIP_REASONS {
            let n = self.skipped.get(reason).copied().unwrap_or(0);
            skipped.add(&[reason], n);
        }
        let mut hooks = FamilyBuilder::new(
            "rstmon_hook_attached",
            "1 when rstmon holds an attached link for a tracing hook.",
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
            misses.add(&[name.as_str()], *n);
        }
        let mut reason = FamilyBuilder::new(
            "rstmon_reset_reason_supported",
            "1 when the kernel's tcp_send_reset tracepoint reports a reset reason (Linux 6.10+); 0 means sent causes come from state and trigger only.",
            GAUGE,
            &[],
        );
        reason.add(&[], f64::from(u8::from(self.reason_supported)));
        let info = info::build_family(&self.version, &self.revision, &self.rustc);
        let kernel = info::kernel_family(&self.kernel_release, &self.kernel_version);
        // A snapshot exists only once the programs are attached.
        let ready = info::ready_family(true);

        families.extend([
            dropped, submitted, delivered, errors, skipped, hooks, misses, reason, info, kernel,
            ready,
        ]);
        families.retain(|f| !f.is_empty());
        // The per-interface families and the histograms are written by hand, each in
        // its place in name order.
        let t = &self.ifaces;
        let by_hand: [(&str, &Writer); 7] = [
            (sources::wire::METRIC, &|o| {
                t.write_wire(o, &self.wire, &self.wire_unattributed);
            }),
            (sources::egress::FORWARDED_METRIC, &|o| {
                t.write_forwarded(
                    o,
                    &self.egress.forwarded,
                    &self.egress.forwarded_unattributed,
                );
            }),
            (sources::verdict::VERDICT_METRIC, &|o| {
                t.write_verdicts(o, &self.verdicts);
            }),
            (sources::verdict::SUSPECT_METRIC, &|o| {
                t.write_suspects(o, &self.verdicts);
            }),
            (iftable::XDP_ATTACHED, &|o| t.write_xdp_attached(o)),
            (iftable::TC_ATTACHED, &|o| t.write_tc_attached(o)),
            (sources::workload::AGE, &|o| {
                sources::workload::write_histograms(o, &self.histograms);
            }),
        ];
        let mut parts: Vec<Part<'_, '_>> = families.into_iter().map(Part::Built).collect();
        parts.extend(by_hand.into_iter().map(|(name, f)| Part::ByHand(name, f)));
        parts.sort_by_key(Part::name);
        let series: usize = parts.iter().map(Part::len).sum::<usize>() + t.len() * 25;
        let mut out = String::with_capacity(series * 96 + parts.len() * 160 + 8192);
        for p in parts {
            match p {
                Part::Built(f) => f.write(&mut out),
                Part::ByHand(_, f) => f(&mut out),
            }
        }
        Ok(out)
    }
}

/// Writes a family by hand.
type Writer<'f> = dyn Fn(&mut String) + 'f;

/// One family of the exposition: built, or written by hand.
enum Part<'a, 'f> {
    Built(FamilyBuilder<'a>),
    ByHand(&'static str, &'f Writer<'f>),
}

impl Part<'_, '_> {
    fn name(&self) -> &'static str {
        match self {
            Part::Built(f) => f.name(),
            Part::ByHand(name, _) => name,
        }
    }

    fn len(&self) -> usize {
        match self {
            Part::Built(f) => f.len(),
            Part::ByHand(..) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Family, RecvCause, SendCause};

    fn sample() -> Snapshot {
        let mut s = Snapshot {
            ifaces: std::sync::Arc::new(iftable::IfaceTable::new([iftable::Iface {
                ifindex: 7,
                name: "veth0".into(),
                mode: "native",
                tc: Some("tcx"),
            }])),
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
            revision: "0123456789ab".into(),
            rustc: "rustc 1.95.0 (59807616e 2026-04-14)".into(),
            kernel_release: "6.18.0".into(),
            kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.18.0-1".into(),
            ..Default::default()
        };
        s.sent.insert((SendCause::NoListener, Family::Ipv4), 3);
        s.received.insert((RecvCause::Refused, Family::Ipv6), 2);
        // Within a slot: direction * 4 + IPv6 * 2 + ACK.
        let mut wire = [0; 8];
        wire[1] = 3; // ingress, IPv4, RST|ACK
        wire[4 + 2] = 2; // egress, IPv6, RST
        s.wire = vec![wire];
        s.egress
            .origins
            .insert((rst_common::EGRESS_FIREWALL, Family::Ipv6, false), 2);
        s.egress.forwarded = vec![[1, 0]];
        // The 3 ingress RSTs: 2 taken by a socket (one with a foreign TTL), 1 ignored.
        let mut verdicts = [0; sources::verdict::COUNTERS];
        for (kind, value, n) in [
            (rst_common::KIND_VERDICT, rst_common::VERDICT_ACCEPTED, 2),
            (rst_common::KIND_VERDICT, rst_common::VERDICT_IGNORED, 1),
            (rst_common::KIND_SIGNAL, rst_common::SIGNAL_TTL, 1),
        ] {
            verdicts[sources::verdict::column(0, kind, value).unwrap()] = n;
        }
        s.verdicts = vec![verdicts];
        s.kernel.set(Stat::WireSampled, 3);
        s.user.wire_received = 3;
        s.workloads
            .rows
            .insert(("sent", "unread_data_close", "nginx.service".into()), 2);
        s.workloads
            .rows
            .insert(("received", "peer_abort", "other".into()), 1);
        s.workloads.workloads = ["nginx.service".to_string(), "other".to_string()].into();
        s.workloads.overflow = 1;
        s.histograms.idle[0].buckets[2] = 2;
        s.histograms.idle[0].sum_ms = 4_400;
        s.histograms.age[1].buckets[13] = 1;
        s.histograms.age[1].sum_ms = 700_000_000;
        s
    }

    /// The exposition is part of the contract: compare it with the golden file.
    /// Regenerate with `RSTMON_BLESS=1 cargo test -p rst-user golden`.
    #[test]
    fn golden_exposition() {
        let got = sample().render().unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/metrics.golden.txt");
        if std::env::var_os("RSTMON_BLESS").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("golden file");
        assert_eq!(got, want, "exposition changed; bless it if intended");
    }

    #[test]
    fn every_cause_is_exported_at_zero() {
        let text = Snapshot::default().render().unwrap();
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
        let text = sample().render().unwrap();
        assert!(text.contains(
            "rstmon_wire_resets_total{direction=\"ingress\",family=\"ipv4\",flags=\"rst_ack\",interface=\"veth0\"} 3"
        ));
        assert!(text.contains(
            "rstmon_wire_resets_total{direction=\"ingress\",family=\"ipv6\",flags=\"rst\",interface=\"veth0\"} 0"
        ));
        assert!(text.contains(
            "rstmon_wire_resets_total{direction=\"egress\",family=\"ipv6\",flags=\"rst\",interface=\"veth0\"} 2"
        ));
        assert!(
            text.contains(
                "rstmon_egress_resets_total{family=\"ipv6\",origin=\"firewall_reject\"} 2"
            )
        );
        assert!(
            text.contains("rstmon_forwarded_resets_total{family=\"ipv4\",interface=\"veth0\"} 1")
        );
        assert!(text.contains("rstmon_tc_attached{interface=\"veth0\",mode=\"tcx\"} 1"));
        assert!(text.contains("rstmon_xdp_attached{interface=\"veth0\",mode=\"native\"} 1"));
    }
}
