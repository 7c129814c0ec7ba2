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

/// `Seccomp:` of /proc/self/status: 0 none, 1 strict, 2 a filter.
pub fn seccomp_mode() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Where the kernel's lockdown mode is shown (securityfs).
pub const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

/// Why the kernel answered EPERM to an operation that takes `needs`, for a process with
/// effective set `eff`: the capabilities it lacks — and only when it lacks one. With all
/// of them present the cause is something else, named as far as this process can see it:
/// a seccomp filter (`seccomp`, from [`seccomp_mode`]), kernel lockdown (`lockdown`, the
/// text of [`LOCKDOWN`]), or else a security module or another policy.
pub fn eperm_cause(
    eff: u64,
    needs: &[u32],
    seccomp: Option<u32>,
    lockdown: Option<&str>,
) -> String {
    let has = |c: u32| {
        eff & (1u64 << c) != 0
            || (matches!(c, CAP_BPF | CAP_PERFMON) && eff & (1u64 << CAP_SYS_ADMIN) != 0)
    };
    let missing: Vec<&str> = needs
        .iter()
        .copied()
        .filter(|c| !has(*c))
        .map(cap_name)
        .collect();
    if !missing.is_empty() {
        return format!("needs {}", missing.join(" and "));
    }
    let present: Vec<&str> = needs.iter().copied().map(cap_name).collect();
    let present = present.join(" and ");
    if seccomp.is_some_and(|m| m != 0) {
        return format!(
            "{present} present; a seccomp filter is active (Seccomp: {} in /proc/self/status) \
             and refuses bpf(2): allow it (systemd: SystemCallFilter=@system-service bpf)",
            seccomp.unwrap_or_default()
        );
    }
    if let Some(mode) = lockdown.and_then(|l| {
        let start = l.find('[')? + 1;
        let end = start + l[start..].find(']')?;
        Some(&l[start..end])
    }) && mode != "none"
    {
        return format!(
            "{present} present; the kernel is locked down ({mode} mode, {LOCKDOWN}), which \
             forbids eBPF programs that read kernel memory"
        );
    }
    format!(
        "{present} present; refused by something else: a Linux security module (SELinux, \
         AppArmor, the BPF LSM) or a container runtime's policy"
    )
}

/// [`eperm_cause`] for this process.
pub fn eperm_cause_here(needs: &[u32]) -> String {
    let lockdown = fs::read_to_string(LOCKDOWN).ok();
    eperm_cause(effective(), needs, seccomp_mode(), lockdown.as_deref())
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
    fn eperm_names_a_capability_only_when_it_is_missing() {
        let bit = |c: u32| 1u64 << c;
        let all = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN);
        let needs = [CAP_BPF, CAP_PERFMON];
        assert_eq!(
            eperm_cause(all & !bit(CAP_PERFMON), &needs, Some(0), None),
            "needs CAP_PERFMON"
        );
        assert_eq!(
            eperm_cause(0, &needs, Some(2), None),
            "needs CAP_BPF and CAP_PERFMON"
        );
        // CAP_SYS_ADMIN stands in for both.
        assert!(!eperm_cause(bit(CAP_SYS_ADMIN), &needs, Some(0), None).contains("needs"));
        // Present: never "needs", but what else refuses.
        let seccomp = eperm_cause(all, &needs, Some(2), None);
        assert!(
            seccomp.contains("seccomp filter") && !seccomp.contains("needs"),
            "{seccomp}"
        );
        let locked = eperm_cause(
            all,
            &needs,
            Some(0),
            Some("none integrity [confidentiality]\n"),
        );
        assert!(
            locked.contains("locked down (confidentiality mode"),
            "{locked}"
        );
        for lockdown in [None, Some("[none] integrity confidentiality")] {
            let other = eperm_cause(all, &needs, Some(0), lockdown);
            assert!(
                other.contains("security module") && !other.contains("needs"),
                "{other}"
            );
        }
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
