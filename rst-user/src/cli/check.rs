//! `rstmon check`: one line per prerequisite; non-zero exit when the daemon could not run.

use rst_common::OFF_NONE;

use crate::{
    attach::{Config, LoadError, Monitor, error::has_errno},
    kernel::{self, KernelError, caps as privs},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

pub struct Item {
    pub verdict: Verdict,
    pub name: &'static str,
    pub detail: String,
}

fn item(verdict: Verdict, name: &'static str, detail: impl Into<String>) -> Item {
    Item {
        verdict,
        name,
        detail: detail.into(),
    }
}

/// Parses "6.18.44-foo" into (6, 18).
pub fn parse_release(r: &str) -> Option<(u32, u32)> {
    let mut it = r.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

pub fn run() -> Vec<Item> {
    let mut items = Vec::new();
    let release = kernel::release();
    items.push(kernel_item(&release));

    let missing = privs::missing_for_daemon(privs::effective());
    items.push(if missing.is_empty() {
        item(
            Verdict::Ok,
            "capabilities",
            "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN present",
        )
    } else {
        let why: Vec<String> = privs::DAEMON_CAPS
            .iter()
            .filter(|(c, _)| missing.contains(&privs::cap_name(*c)))
            .map(|(c, why)| format!("{} (to {why})", privs::cap_name(*c)))
            .collect();
        item(
            Verdict::Fail,
            "capabilities",
            format!("missing {}", why.join(", ")),
        )
    });

    // Everything below reads only the kernel's BTF (world-readable) and, for the last
    // line, loads and attaches the tracing programs for a moment: nothing is mounted
    // or otherwise changed on the system.
    let btf = match kernel::read_btf() {
        Ok(b) => {
            items.push(item(
                Verdict::Ok,
                "btf",
                format!("{} ({} types)", kernel::VMLINUX_BTF, b.type_count()),
            ));
            Some(b)
        }
        Err(e) => {
            items.push(item(Verdict::Fail, "btf", e.to_string()));
            None
        }
    };

    let mut layout = None;
    if let Some(b) = &btf {
        let mut tracepoints_ok = true;
        for tp in [kernel::SEND_RESET_TP, kernel::RECV_RESET_TP] {
            items.push(match kernel::tracepoint_args(b, tp) {
                Ok(n) => item(
                    Verdict::Ok,
                    "tracepoint",
                    format!(
                        "tcp:{tp} (raw tracepoint, {n} argument{})",
                        if n == 1 { "" } else { "s" }
                    ),
                ),
                Err(e) => {
                    tracepoints_ok = false;
                    item(Verdict::Fail, "tracepoint", e.to_string())
                }
            });
        }
        match kernel::probe_layout(b) {
            Ok(l) => {
                items.push(features_item(&l.features));
                items.push(if l.has_reason {
                    item(
                        Verdict::Ok,
                        "reasons",
                        format!(
                            "tcp_send_reset reports reasons; {} names decoded from the running kernel",
                            l.reasons.len()
                        ),
                    )
                } else if l.send_reset_args >= 3 {
                    item(
                        Verdict::Warn,
                        "reasons",
                        "tcp_send_reset passes a reason but BTF has no enum sk_rst_reason: \
                         sent causes from state and trigger only, others as `other`",
                    )
                } else {
                    item(
                        Verdict::Warn,
                        "reasons",
                        "tcp_send_reset has no reason argument: sent causes from state and \
                         trigger only, others as `other` (S3's unread_data_close among them)",
                    )
                });
                items.push(coverage_item(l.send_reset_no_socket_traced()));
                items.push(if l.offsets.tp_saw_tstamp_bit != OFF_NONE {
                    item(
                        Verdict::Ok,
                        "rx_opt",
                        "tcp_sock.rx_opt found: peer_lost_state told from peer_abort",
                    )
                } else {
                    item(
                        Verdict::Warn,
                        "rx_opt",
                        "tcp_sock.rx_opt not in BTF: every established-state RST counts as peer_abort",
                    )
                });
                items.push(verdicts_item(&l));
                layout = Some(l);
            }
            // A missing tracepoint has its line already.
            Err(e) if tracepoints_ok => items.push(item(Verdict::Fail, "layout", e.to_string())),
            Err(_) => {}
        }
    }
    // The BTF index is the large allocation of a start: free it before loading.
    drop(btf);

    if let Some(l) = layout
        && items.iter().all(|i| i.verdict != Verdict::Fail)
    {
        let cfg = Config {
            wakeup_bytes: 1 << 20,
            ..Config::default()
        };
        // Its log lines would repeat the items above.
        let started =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                Monitor::start_with(&cfg, l)
            });
        items.push(match started {
            Ok(m) => {
                let hooks = m.programs.hooks();
                let ok = hooks.iter().filter(|(_, a)| *a).count();
                item(
                    Verdict::Ok,
                    "load",
                    format!(
                        "eBPF object loads; {ok}/{} tracing hooks attach",
                        hooks.len()
                    ),
                )
            }
            Err(e) => item(Verdict::Fail, "load", load_failure(&e)),
        });
    }
    items
}

/// Whether `skb:kfree_skb` carries the drop reason the `challenged` verdict and the
/// `alive_after_reset` signal are told from (5.17+).
fn verdicts_item(l: &kernel::KernelLayout) -> Item {
    if kernel::verdict::tells_challenged(&l.verdict) {
        item(
            Verdict::Ok,
            "verdicts",
            "skb:kfree_skb reports drop reasons: challenged RSTs and alive_after_reset are told",
        )
    } else {
        item(
            Verdict::Warn,
            "verdicts",
            "skb:kfree_skb has no drop reason (before 5.17): challenged RSTs count as ignored, alive_after_reset is never raised",
        )
    }
}

/// The release, against the kernels rstmon is tested on (5.10 to 6.18). What a kernel
/// can do is decided by its features, never by this number.
fn kernel_item(release: &str) -> Item {
    match parse_release(release) {
        Some(v) if v >= (5, 10) => item(Verdict::Ok, "kernel", release),
        Some(_) => item(
            Verdict::Warn,
            "kernel",
            format!("{release}: older than 5.10, the oldest kernel rstmon is tested on"),
        ),
        None => item(
            Verdict::Warn,
            "kernel",
            format!("{release}: release not understood"),
        ),
    }
}

/// The kernel features rstmon adapts to: present, or what it does without them. No
/// ring buffer is the one that stops it.
fn features_item(f: &kernel::Features) -> Item {
    if !f.ringbuf {
        return item(
            Verdict::Fail,
            "features",
            "no BPF ring buffer (Linux 5.8+): rstmon cannot run here",
        );
    }
    let opt = f.optional();
    let have: Vec<&str> = opt.iter().filter(|o| o.1).map(|o| o.0).collect();
    let without: Vec<String> = opt
        .iter()
        .filter(|o| !o.1)
        .map(|o| format!("{} ({})", o.0, o.2))
        .collect();
    let mut detail = format!(
        "ring buffer{}",
        have.iter().map(|h| format!(", {h}")).collect::<String>()
    );
    if !without.is_empty() {
        detail.push_str(&format!("; not here: {}", without.join(", ")));
    }
    item(Verdict::Ok, "features", detail)
}

/// Whether every reset the stack sends reaches `tcp_send_reset`; where it does not, the
/// sender rows that differ (docs/compatibility.md).
fn coverage_item(no_socket_traced: bool) -> Item {
    if no_socket_traced {
        item(
            Verdict::Ok,
            "coverage",
            "tcp_send_reset fires for every reset the stack sends",
        )
    } else {
        item(
            Verdict::Warn,
            "coverage",
            "tcp_send_reset does not fire without a full socket (before 6.10): the sender \
             side of S1, S5, S6 (no_listener, no_connection) is counted as sent only when \
             the RST leaves by a monitored interface (TC egress, cause from the wire), S4 \
             (data_after_close, a time-wait socket's RST) not at all; the receiver side and \
             the wire see them all",
        )
    }
}

/// A failed load. When the kernel refused with EPERM, the cause: the capability missing,
/// or — the capability line above having passed, so CAP_BPF and CAP_PERFMON are there —
/// what else refused (a seccomp filter, lockdown, a security module); never a capability
/// the process has.
fn load_failure(e: &LoadError) -> String {
    let what = match e {
        LoadError::Load(inner) if has_errno(inner, &[libc::EPERM]) => e.to_string(),
        LoadError::Program { error, .. } if has_errno(error, &[libc::EPERM]) => e.to_string(),
        LoadError::Kernel(KernelError::Denied { what, error, .. }) => format!("{what}: {error}"),
        _ => return e.to_string(),
    };
    let cause = privs::eperm_cause_here(&[privs::CAP_BPF, privs::CAP_PERFMON]);
    format!("{what} ({cause})")
}

pub fn print(items: &[Item]) -> bool {
    for i in items {
        let tag = match i.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{tag}  {:<13} {}", i.name, i.detail);
    }
    items.iter().all(|i| i.verdict != Verdict::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v509"), Some((6, 18)));
        assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.10.0-32-cloud-amd64"), Some((5, 10)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(kernel_item("5.10.0-32-cloud-amd64").verdict, Verdict::Ok);
        assert_eq!(kernel_item("5.4.0-1-amd64").verdict, Verdict::Warn);
        assert_eq!(kernel_item("garbage").verdict, Verdict::Warn);
    }

    #[test]
    fn feature_and_coverage_lines() {
        let all = kernel::Features::ALL;
        let i = features_item(&all);
        assert_eq!(i.verdict, Verdict::Ok);
        assert_eq!(i.detail, "ring buffer, coarse clock, XDP link, tcx");
        // Debian 11's 5.10: no coarse clock, no tcx.
        let old = kernel::Features {
            coarse_clock: false,
            tcx: false,
            send_reset_no_socket_traced: false,
            ..all
        };
        let i = features_item(&old);
        assert_eq!(i.verdict, Verdict::Ok);
        assert_eq!(
            i.detail,
            "ring buffer, XDP link; not here: coarse clock (the sampler reads the precise \
             clock), tcx (TC attaches through a clsact qdisc)"
        );
        let none = kernel::Features {
            ringbuf: false,
            ..old
        };
        assert_eq!(features_item(&none).verdict, Verdict::Fail);
        assert_eq!(coverage_item(true).verdict, Verdict::Ok);
        let c = coverage_item(false);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.detail.contains("S1, S5, S6") && c.detail.contains("S4"),
            "{}",
            c.detail
        );
    }
}
