//! Capability checks, so a missing privilege is one clear line, not an EPERM later.
//!
//! rstmon needs exactly three capabilities and nothing else (no CAP_SYS_ADMIN, no file
//! access beyond world-readable files): it reads the kernel's BTF, which is mode 0444,
//! never tracefs, and mounts nothing.

use std::fs;

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What the daemon needs, and what for.
pub const DAEMON_CAPS: [(u32, &str); 3] = [
    (CAP_BPF, "load eBPF programs and create their maps"),
    (
        CAP_PERFMON,
        "load the tracing programs and read kernel memory from them",
    ),
    (CAP_NET_ADMIN, "attach XDP"),
];

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

/// Capabilities the daemon lacks, of [`DAEMON_CAPS`]: CAP_BPF (programs and maps),
/// CAP_PERFMON (tracing programs and their kernel reads) and CAP_NET_ADMIN (XDP). The
/// kernel also accepts CAP_SYS_ADMIN for the first two (`bpf_capable()`,
/// `perfmon_capable()`), so it stands in for them.
pub fn missing_for_daemon(eff: u64) -> Vec<&'static str> {
    let has = |c: u32| eff & (1u64 << c) != 0;
    DAEMON_CAPS
        .into_iter()
        .map(|(c, _)| c)
        .filter(|&c| {
            // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
            let covered = c != CAP_NET_ADMIN && has(CAP_SYS_ADMIN);
            !has(c) && !covered
        })
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
        let bit = |c: u32| 1u64 << c;
        let all = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN);
        assert!(missing_for_daemon(u64::MAX).is_empty());
        assert!(missing_for_daemon(all).is_empty());
        assert_eq!(
            missing_for_daemon(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        for (cap, _) in DAEMON_CAPS {
            assert_eq!(missing_for_daemon(all & !bit(cap)), vec![cap_name(cap)]);
        }
        // CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON, not CAP_NET_ADMIN.
        assert!(missing_for_daemon(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)).is_empty());
        assert_eq!(
            missing_for_daemon(bit(CAP_SYS_ADMIN)),
            vec!["CAP_NET_ADMIN"]
        );
    }
}
