//! `rstmon check`: one line per prerequisite; non-zero exit when the daemon could not run.

use rst_common::OFF_NONE;

use crate::{
    attach::{Config, Monitor},
    kernel::{self, KernelBtf, caps as privs},
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
        item(
            Verdict::Fail,
            "capabilities",
            format!("missing {}", missing.join(", ")),
        )
    });

    let btf = match KernelBtf::load() {
        Ok(b) => {
            items.push(item(Verdict::Ok, "btf", kernel::VMLINUX_BTF));
            Some(b)
        }
        Err(e) => {
            items.push(item(Verdict::Fail, "btf", e.to_string()));
            None
        }
    };

    let tracefs = match kernel::ensure_tracefs() {
        Ok(t) => {
            let how = if t.mounted_now {
                " (was not mounted; mounted it)"
            } else {
                ""
            };
            items.push(item(
                Verdict::Ok,
                "tracefs",
                format!("{}{how}", t.path.display()),
            ));
            Some(t)
        }
        Err(e) => {
            items.push(item(Verdict::Fail, "tracefs", e.to_string()));
            None
        }
    };

    if let Some(t) = &tracefs {
        for tp in ["tcp_send_reset", "tcp_receive_reset"] {
            items.push(match kernel::read_format(&t.path, tp) {
                Ok(_) => item(Verdict::Ok, "tracepoint", format!("tcp:{tp}")),
                Err(e) => item(Verdict::Fail, "tracepoint", e.to_string()),
            });
        }
    }

    let mut layout = None;
    if let (Some(t), Some(b)) = (&tracefs, &btf) {
        match kernel::probe_layout(&t.path, b) {
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
                } else {
                    item(
                        Verdict::Warn,
                        "reasons",
                        "tcp_send_reset has no reason field: sent causes from state and trigger only, others as `other`",
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
            Err(e) => items.push(item(Verdict::Fail, "layout", e.to_string())),
        }
    }
    // The BTF parse is the expensive part of a start: free it before loading.
    drop(btf);

    if let (Some(t), Some(l)) = (tracefs, layout)
        && items.iter().all(|i| i.verdict != Verdict::Fail)
    {
        let cfg = Config {
            max_samples_per_sec: 0,
            wakeup_bytes: 1 << 20,
            kernel_log: false,
        };
        // Its log lines would repeat the items above.
        let started =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                Monitor::start_with(&cfg, t, l)
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
            Err(e) => item(Verdict::Fail, "load", e.to_string()),
        });
    }
    items
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
