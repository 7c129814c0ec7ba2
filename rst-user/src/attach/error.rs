//! Why loading or attaching failed, as ONE line: the daemon prints it as its only output.
//! Wrapped aya and kernel errors are flattened by [`one_line`] into the message, so
//! `source()` does not expose them again (a chain printer such as anyhow's `{:#}` would
//! repeat them, verifier log included). `{:?}` keeps everything.

use std::io;

use aya::programs::ProgramError;

use crate::kernel::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this rstmon was built without its eBPF object (AYA_BUILD_SKIP); rebuild it normally")]
    NoObject,
    #[error("{}", one_line(.0))]
    Kernel(KernelError),
    #[error("loading the eBPF object: {}", one_line(.0))]
    Load(aya::EbpfError),
    #[error("eBPF program {name}: {}", program_error(.error))]
    Program {
        name: &'static str,
        error: ProgramError,
    },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error("map {name}: {}", one_line(.error))]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
    #[error(
        "interface {0} already has an XDP program attached; rstmon never replaces one \
         (see `ip link show {0}`, detach it with `ip link set dev {0} xdp off` if it is not needed)"
    )]
    XdpBusy(String),
    #[error("attaching XDP to {iface}: {}{}", program_error(.error), native_hint(.error))]
    XdpAttach { iface: String, error: ProgramError },
    #[error("attaching TC egress to {iface}: {}", program_error(.error))]
    TcAttach { iface: String, error: ProgramError },
    #[error("no such interface: {0}")]
    NoInterface(String),
    #[error("watching interfaces (netlink): {0}")]
    Netlink(io::Error),
}

impl From<KernelError> for LoadError {
    fn from(e: KernelError) -> Self {
        Self::Kernel(e)
    }
}

fn native_hint(e: &ProgramError) -> &'static str {
    if has_errno(e, &[libc::EOPNOTSUPP]) {
        " (no native XDP on this interface; use --xdp-mode auto or generic)"
    } else {
        ""
    }
}

/// A program error on one line; a failed load shows the verifier's verdict, read from
/// aya's `verifier_log` field.
fn program_error(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => format!(
            "the kernel refused to load it ({io_error}); {}",
            verifier_verdict(&verifier_log.to_string())
        ),
        e => one_line(e),
    }
}

/// The verdict of a verifier log: its last line before the statistics the kernel appends.
pub fn verifier_verdict(log: &str) -> String {
    let verdict = log.lines().map(str::trim).rfind(|l| {
        !l.is_empty()
            && !l.starts_with("processed ")
            && !l.starts_with("verification time")
            && !l.starts_with("stack depth")
    });
    match verdict {
        Some(v) => format!(
            "verifier: {}",
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        None => "the verifier gave no log".into(),
    }
}

/// Longest [`one_line`] rendering, in characters.
pub const ONE_LINE_MAX: usize = 300;

/// Renders `err` and its sources as one line: each level once (aya errors often repeat
/// their source in their own message), newlines folded, at most [`ONE_LINE_MAX`]
/// characters.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = if let Some(pe) = e.downcast_ref::<ProgramError>()
            && matches!(pe, ProgramError::LoadError { .. })
        {
            program_error(pe)
        } else {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    let line = parts.join(": ");
    match line.char_indices().nth(ONE_LINE_MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Whether `err` or one of its sources carries one of the errnos `codes`.
pub fn has_errno(err: &(dyn std::error::Error + 'static), codes: &[i32]) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let errno = if let Some(io) = e.downcast_ref::<io::Error>() {
            io.raw_os_error()
        } else if let Some(nl) = e.downcast_ref::<aya::sys::NetlinkError>() {
            // The legacy netlink attach path (kernels without XDP links).
            nl.raw_os_error()
        } else if let Some(ProgramError::SyscallError(s)) = e.downcast_ref::<ProgramError>() {
            s.io_error.raw_os_error()
        } else {
            None
        };
        if errno.is_some_and(|c| codes.contains(&c)) {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_becomes_its_verdict_on_one_line() {
        let err = LoadError::Program {
            name: "rstmon_xdp",
            error: ProgramError::LoadError {
                io_error: io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: aya_obj::VerifierLog::new(
                    "0: R1=ctx() R10=fp0\n0: (61) r2 = *(u32 *)(r1 +4)\n\
                     1: (71) r3 = *(u8 *)(r2 +0)\nR2 invalid mem access 'scalar'\n\
                     processed 2 insns (limit 1000000) max_states_per_insn 0\n\
                     verification time 17 usec\nstack depth 0\n"
                        .into(),
                ),
            },
        };
        let got = err.to_string();
        assert!(!got.contains('\n'), "{got}");
        assert_eq!(
            got,
            "eBPF program rstmon_xdp: the kernel refused to load it (Permission denied (os error 13)); \
             verifier: R2 invalid mem access 'scalar'"
        );
        assert_eq!(verifier_verdict(""), "the verifier gave no log");
    }

    /// An aya-like error: its message repeats its source.
    #[derive(Debug)]
    struct Fake(String, io::Error);

    impl std::fmt::Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Fake {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn each_cause_once_and_capped() {
        let e = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
        let err = LoadError::XdpAttach {
            iface: "lo".into(),
            error: e,
        };
        assert_eq!(
            err.to_string(),
            "attaching XDP to lo: `bpf_link_create` failed: Operation not supported (os error 95) \
             (no native XDP on this interface; use --xdp-mode auto or generic)"
        );
        assert!(std::error::Error::source(&err).is_none());
        let long = Fake("x\n".repeat(1000), io::Error::other("y"));
        let got = one_line(&long);
        assert!(!got.contains('\n'));
        assert_eq!(got.chars().count(), ONE_LINE_MAX + 1, "{got}");
    }
}
