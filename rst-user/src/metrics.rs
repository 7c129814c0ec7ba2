//! Prometheus exposition. A [`Snapshot`] is read from the kernel maps at scrape time
//! and rendered; every known label value is present, at 0 if nothing happened yet.

use std::collections::BTreeMap;

use prometheus::{Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

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
    pub kernel: KernelStats,
    pub user: UserStats,
    pub reason_supported: bool,
    pub version: String,
    pub kernel_release: String,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

impl Snapshot {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let reg = Registry::new();
        let sent = counter(
            &reg,
            "rstmon_resets_sent_total",
            "TCP resets this host's TCP stack sent (all network namespaces), by the kernel's own reason.",
            &["cause", "family"],
        );
        let received = counter(
            &reg,
            "rstmon_resets_received_total",
            "TCP resets accepted by a socket on this host.",
            &["cause", "family"],
        );
        let wire = counter(
            &reg,
            "rstmon_wire_resets_total",
            "TCP RST segments seen by XDP on ingress of each monitored interface (exact, never sampled).",
            &["interface", "family", "flags"],
        );
        for fam in Family::ALL {
            for cause in SendCause::ALL {
                let v = self.sent.get(&(*cause, *fam)).copied().unwrap_or(0);
                sent.with_label_values(&[cause.label(), fam.label()])
                    .inc_by(v);
            }
            for cause in RecvCause::ALL {
                let v = self.received.get(&(*cause, *fam)).copied().unwrap_or(0);
                received
                    .with_label_values(&[cause.label(), fam.label()])
                    .inc_by(v);
            }
            for (iface, _) in &self.interfaces {
                for flags in WIRE_FLAGS {
                    wire.with_label_values(&[iface.as_str(), fam.label(), flags]);
                }
            }
        }
        for ((iface, fam, flags), v) in &self.wire {
            wire.with_label_values(&[iface.as_str(), fam.label(), flags])
                .inc_by(*v);
        }

        let dropped = counter(
            &reg,
            "rstmon_samples_dropped_total",
            "Samples not delivered to user space: ring buffer full, or over the sampling rate limit. Counters stay exact.",
            &["source", "reason"],
        );
        let k = &self.kernel;
        dropped
            .with_label_values(&["wire", "ring_full"])
            .inc_by(k.wire_ring_full);
        dropped
            .with_label_values(&["wire", "rate_limited"])
            .inc_by(k.wire_rate_limited);
        dropped
            .with_label_values(&["trace", "ring_full"])
            .inc_by(k.trace_ring_full);
        let submitted = counter(
            &reg,
            "rstmon_samples_submitted_total",
            "Samples the kernel programs put into the ring buffer.",
            &["source"],
        );
        submitted
            .with_label_values(&["wire"])
            .inc_by(k.wire_sampled);
        submitted
            .with_label_values(&["trace"])
            .inc_by(k.trace_sampled);
        let delivered = counter(
            &reg,
            "rstmon_samples_received_total",
            "Samples the daemon read from the ring buffer.",
            &["source"],
        );
        delivered
            .with_label_values(&["wire"])
            .inc_by(self.user.wire_received);
        delivered
            .with_label_values(&["trace"])
            .inc_by(self.user.trace_received);
        let errors = counter(
            &reg,
            "rstmon_errors_total",
            "Internal errors: counter map full, failed kernel reads, undecodable samples.",
            &["kind"],
        );
        errors
            .with_label_values(&["counter_map_full"])
            .inc_by(k.counter_map_full);
        errors
            .with_label_values(&["kernel_read"])
            .inc_by(k.read_errors);
        errors
            .with_label_values(&["decode"])
            .inc_by(self.user.decode_errors);

        let attached = gauge(
            &reg,
            "rstmon_xdp_attached",
            "1 for each interface with rstmon's XDP program attached, by XDP mode.",
            &["interface", "mode"],
        );
        for (iface, mode) in &self.interfaces {
            attached
                .with_label_values(&[iface.as_str(), mode.as_str()])
                .set(1);
        }
        let hooks = gauge(
            &reg,
            "rstmon_hook_attached",
            "1 when a tracing hook is attached.",
            &["hook"],
        );
        for (name, ok) in &self.hooks {
            hooks
                .with_label_values(&[name.as_str()])
                .set(i64::from(*ok));
        }
        let reason = gauge(
            &reg,
            "rstmon_reset_reason_supported",
            "1 when the kernel's tcp_send_reset tracepoint reports a reset reason (Linux 6.10+); 0 means sent causes come from state and trigger only.",
            &[],
        );
        reason
            .with_label_values::<&str>(&[])
            .set(i64::from(self.reason_supported));
        let info = gauge(
            &reg,
            "rstmon_build_info",
            "rstmon version and the running kernel; always 1.",
            &["version", "kernel"],
        );
        info.with_label_values(&[self.version.as_str(), self.kernel_release.as_str()])
            .set(1);

        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&reg.gather(), &mut out)
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
