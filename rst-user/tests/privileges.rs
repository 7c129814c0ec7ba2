//! Least privilege: `rstmon run` as an unprivileged user (uid 65534) with exactly
//! CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN attaches and counts exactly; with any one of
//! them removed it refuses with one line naming it; and `rstmon check` changes nothing
//! on the system (no mount, even where tracefs is not mounted).
//!
//! Privileged: needs root (to create namespaces and to hand the capabilities over with
//! util-linux's `setpriv`). The tracepoint counters are host-wide: run with
//! `--test-threads=1` (`cargo xtask test` does).

mod common;

use common::{assert_delta, connect_refused};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    process::{Command, Output},
};

use common::{BIN, run_to_exit, xdp_attachment};
use rst_user::netns::{Ns, Pair};

/// The capabilities rstmon documents, as setpriv names them, with the kernel's names.
const CAPS: [(&str, &str); 3] = [
    ("bpf", "CAP_BPF"),
    ("perfmon", "CAP_PERFMON"),
    ("net_admin", "CAP_NET_ADMIN"),
];
/// Their bits in /proc/<pid>/status CapEff: 39, 38 and 12.
const CAP_BITS: u64 = 1 << 39 | 1 << 38 | 1 << 12;
const NOBODY: u32 = 65534;
const N: i64 = 10;
const CLOSED_PORT: u16 = 9;
const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9745));
const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WIRE: &str = "rstmon_wire_resets_total";

/// `setpriv` arguments that run the next program as uid/gid 65534, no supplementary
/// groups, with exactly `caps` (setpriv names) as its inheritable, ambient and bounding
/// sets: after exec, its effective set is exactly `caps`.
fn setpriv(caps: &[&str]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all{set}"),
        format!("--ambient-caps=-all{set}"),
        format!("--bounding-set=-all{set}"),
        "--".into(),
    ]
}

fn all_but(skip: &str) -> Vec<&'static str> {
    CAPS.iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != skip)
        .collect()
}

fn pair() -> Pair {
    Pair::new()
        .unwrap_or_else(|e| panic!("creating namespaces and veth (needs root and iproute2): {e}"))
}

/// `rstmon ARGS...` inside `ns`, through setpriv with `caps`.
fn as_nobody(ns: &Ns, caps: &[&str], args: &[&str]) -> Command {
    let mut cmd = ns.command("setpriv");
    cmd.args(setpriv(caps))
        .arg(BIN)
        .args(args)
        .env_remove("RSTMON_LOG")
        .env("RUST_BACKTRACE", "1");
    cmd
}

/// The `Uid:` and `CapEff:` lines of a process.
fn uid_and_caps(pid: i32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .expect("effective uid");
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff");
    (uid, caps)
}

/// One stderr line, `rstmon: ...`, naming `cap`; non-zero exit.
fn assert_refused_naming(out: &Output, what: &str, cap: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{what}: {} / {}", out.status, stderr.trim_end());
    assert!(!out.status.success(), "{what}: exited 0; stderr:\n{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: stderr must be one line:\n{stderr}"
    );
    let line = stderr.trim_end();
    assert!(
        line.starts_with("rstmon: ") && line.contains(cap),
        "{what}: {line}"
    );
    for (_, other) in CAPS.iter().filter(|(_, c)| *c != cap) {
        assert!(
            !line.contains(other),
            "{what}: names {other}, which it has: {line}"
        );
    }
}

/// With exactly the three capabilities, as uid 65534: every hook attaches, XDP too,
/// and N refused connects per direction and family count exactly on the sender side,
/// the receiver side and the wire.
#[test]
fn least_capabilities_attach_and_count_exactly() {
    let p = pair();
    let caps: Vec<&str> = CAPS.iter().map(|(c, _)| *c).collect();
    let d = common::rstmon()
        .ifaces(&[&p.a_if])
        .listen(LISTEN)
        .wrapper("setpriv", setpriv(&caps))
        .start(&p.a);
    assert_eq!(
        uid_and_caps(d.pid()),
        (NOBODY, CAP_BITS),
        "rstmon runs as uid 65534 with exactly CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"
    );
    let m = d.scrape();
    for hook in ["tcp:tcp_send_reset", "tcp:tcp_receive_reset"] {
        assert_eq!(
            m.get("rstmon_hook_attached", &[("hook", hook)]),
            Some(1.0),
            "hook {hook}"
        );
    }
    let text = xdp_attachment(&p.a, &p.a_if).expect("XDP attached");
    assert!(text.contains("rstmon_xdp"), "{text}");

    let families: [(&str, IpAddr, IpAddr); 2] = [
        ("ipv4", p.a4.into(), p.b4.into()),
        ("ipv6", p.a6.into(), p.b6.into()),
    ];
    for (fam, a_ip, b_ip) in families {
        for (dir, from, to, wire) in [("A->B", &p.a, b_ip, N), ("B->A", &p.b, a_ip, 0)] {
            let ctx = format!("as nobody, {dir} {fam}, {N} connects to a closed port");
            let before = d.scrape();
            connect_refused(from, SocketAddr::new(to, CLOSED_PORT), N);
            let after = d.scrape();
            let cf = |cause| [("cause", cause), ("family", fam)];
            assert_delta(&after, &before, SENT, &cf("no_listener"), N, &ctx);
            assert_delta(&after, &before, RECEIVED, &cf("refused"), N, &ctx);
            let wl = [
                ("interface", p.a_if.as_str()),
                ("family", fam),
                ("flags", "rst_ack"),
                ("direction", "ingress"),
            ];
            assert_delta(&after, &before, WIRE, &wl, wire, &ctx);
        }
    }
    let errors = d.scrape();
    for kind in ["kernel_read", "decode", "counter_map_full"] {
        assert_eq!(
            errors.get("rstmon_errors_total", &[("kind", kind)]),
            Some(0.0),
            "rstmon_errors_total{{kind={kind:?}}}"
        );
    }
    d.stop();
    assert!(
        xdp_attachment(&p.a, &p.a_if).is_none(),
        "XDP still attached after SIGTERM"
    );
}

/// With any one of the three removed, `rstmon run` exits non-zero with one line naming
/// exactly that capability and attaches nothing; `rstmon check` fails naming it too.
#[test]
fn each_capability_is_required() {
    let p = pair();
    for (cap, name) in CAPS {
        let caps = all_but(cap);
        let listen = LISTEN.to_string();
        let run = as_nobody(
            &p.a,
            &caps,
            &["run", "-i", &p.a_if, "--web.listen-address", &listen],
        );
        let what = format!("run without {name}");
        let out = run_to_exit(run, &what);
        assert_refused_naming(&out, &what, name);
        assert!(
            xdp_attachment(&p.a, &p.a_if).is_none(),
            "{what}: XDP attached"
        );

        let what = format!("check without {name}");
        let out = run_to_exit(as_nobody(&p.a, &caps, &["check"]), &what);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{what}: {}\n{stdout}", out.status);
        assert!(!out.status.success(), "{what}: exited 0:\n{stdout}");
        let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
        assert_eq!(fails.len(), 1, "{what}: one FAIL line:\n{stdout}");
        assert!(
            fails[0].contains("capabilities") && fails[0].contains(name),
            "{what}: {}",
            fails[0]
        );
    }
}

/// `rstmon check` passes as uid 65534 with exactly the three capabilities (BTF is
/// world-readable; tracefs is not needed), inside `ip netns exec`, where tracefs is not
/// mounted.
#[test]
fn check_passes_with_least_capabilities() {
    let ns = Ns::new().unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    let caps: Vec<&str> = CAPS.iter().map(|(c, _)| *c).collect();
    let out = run_to_exit(as_nobody(&ns, &caps, &["check"]), "check as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "check as nobody: {}:\n{stdout}",
        out.status
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // Every tracing hook attaches: "N/N tracing hooks attach", whatever N is.
    let all_attach = stdout.lines().any(|l| {
        l.starts_with("ok")
            && l.split_whitespace()
                .find_map(|w| w.split_once('/'))
                .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                .is_some_and(|(a, b)| a == b && b >= 3)
            && l.contains("tracing hooks attach")
    });
    assert!(all_attach, "not every tracing hook attaches:\n{stdout}");
}

/// As root, in a mount namespace of its own where neither tracefs nor debugfs is
/// mounted (as under `ip netns exec`): `rstmon check` exits 0 and the mount table is the
/// same afterwards (the rstmon before this one mounted tracefs here).
#[test]
fn check_mounts_nothing() {
    let script = r#"
        umount -R /sys/kernel/tracing 2>/dev/null
        umount -R /sys/kernel/debug 2>/dev/null
        cat /proc/self/mountinfo
        echo @@check
        "$0" check
        echo "@@rc $?"
        cat /proc/self/mountinfo
    "#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        BIN,
    ]);
    let out = run_to_exit(cmd, "check in a fresh mount namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "unshare: {}:\n{stdout}", out.status);
    let (before, rest) = stdout.split_once("@@check\n").expect("marker");
    let (check, rest) = rest.split_once("@@rc ").expect("rc marker");
    let (rc, after) = rest.split_once('\n').expect("rc line");
    println!("{check}");
    assert!(
        !before.contains(" - tracefs ") && !before.contains(" - debugfs "),
        "tracefs or debugfs still mounted before the check:\n{before}"
    );
    assert_eq!(rc.trim(), "0", "rstmon check exited {rc}:\n{check}");
    assert!(!check.contains("FAIL"), "{check}");
    assert_eq!(before, after, "rstmon check changed the mount table");
}
