//! Capability checks, so a missing privilege is one clear line, not an EPERM later.

use std::fs;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// Effective capability set of this process.
pub fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_capeff(&s))
        .unwrap_or(0)
}

pub fn parse_capeff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Capabilities the daemon needs: load BPF (CAP_BPF), attach tracing programs
/// (CAP_PERFMON) and XDP (CAP_NET_ADMIN). CAP_SYS_ADMIN covers all of them on its own.
pub fn missing_for_daemon(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) && has(CAP_NET_ADMIN) {
        return vec![];
    }
    [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
        .into_iter()
        .filter(|c| !has(*c))
        .map(cap_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capeff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_capeff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_capeff("Name: x\n"), None);
    }

    #[test]
    fn names_what_is_missing() {
        assert!(missing_for_daemon(u64::MAX).is_empty());
        assert_eq!(
            missing_for_daemon(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        let bpf_only = 1u64 << CAP_BPF | 1u64 << CAP_PERFMON;
        assert_eq!(missing_for_daemon(bpf_only), vec!["CAP_NET_ADMIN"]);
    }
}
