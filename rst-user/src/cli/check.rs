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
    items.push(match parse_release(&release) {
        Some(v) if v >= (6, 10) => item(Verdict::Ok, "kernel", release.clone()),
        Some(v) if v >= (6, 1) => item(
            Verdict::Warn,
            "kernel",
            format!("{release}: supported, but tcp_send_reset has no reason field before 6.10"),
        ),
        _ => item(
            Verdict::Fail,
            "kernel",
            format!("{release}: rstmon needs Linux 6.1 or newer"),
        ),
    });

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
                         trigger only, others as `other`",
                    )
                });
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
        assert_eq!(parse_release("garbage"), None);
    }
}
