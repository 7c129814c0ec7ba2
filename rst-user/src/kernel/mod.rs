//! What the running kernel looks like, from its BTF alone: the arity of the two
//! tracepoints, struct offsets, reset-reason names and the kernel features rstmon adapts
//! to ([`features`]). Rust eBPF gets no CO-RE relocations, so everything the programs
//! read is located here at start-up and passed in as a global. Nothing here touches
//! tracefs or changes the system.

pub mod btf;
pub mod caps;
pub mod features;
pub mod verdict;

use std::{collections::BTreeMap, fs, io, path::Path};

use rst_common::{OFF_NONE, TraceOffsets};

pub use btf::Btf;
pub use features::Features;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The tracepoints rstmon attaches to (raw tracepoints, by these names).
pub const SEND_RESET_TP: &str = "tcp_send_reset";
pub const RECV_RESET_TP: &str = "tcp_receive_reset";
/// Socket state changes: where the connect() and listen() callers are recorded.
pub const SET_STATE_TP: &str = "inet_sock_set_state";

/// The BTF names [`probe_layout`] looks up: indexing only these keeps the one pass over
/// the kernel's BTF cheap.
pub const BTF_NAMES: &[&str] = &[
    "sock",
    "inet_sock",
    "sk_buff",
    "tcp_sock",
    "sock_flags",
    "sk_rst_reason",
    "btf_trace_tcp_send_reset",
    "btf_trace_tcp_receive_reset",
    // features::NAMES
    "bpf_func_id",
    "bpf_map_type",
    "bpf_attach_type",
    "trace_event_raw_tcp_send_reset",
    "btf_trace_inet_sock_set_state",
    "cgroup",
    "kernfs_node",
    "net",
    "net_device",
    "inet_connection_sock",
    // verdict::BTF_NAMES
    "skb_drop_reason",
    "btf_trace_kfree_skb",
];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read kernel BTF {path}: {source}{}", read_hint(.source))]
    BtfRead { path: String, source: io::Error },
    #[error("kernel BTF {path} does not parse: {source}")]
    BtfParse { path: String, source: btf::BtfError },
    #[error("kernel BTF has no {0}")]
    BtfMissing(String),
    #[error(
        "kernel BTF has no tracepoint tcp:{0} (typedef btf_trace_{0}); this kernel is not supported"
    )]
    NoTracepoint(&'static str),
    /// Refused with EPERM; `cause` names the missing capability, or what else refused
    /// when none is missing ([`caps::eperm_cause_here`]).
    #[error("{what}: {error} ({cause})")]
    Denied {
        what: String,
        error: String,
        cause: String,
    },
    #[error("this kernel has no {0} (Linux 5.8+); rstmon cannot run without it")]
    Unsupported(&'static str),
    #[error("tracepoint tcp:{tp} has {args} arguments, rstmon knows {known}")]
    Arity {
        tp: &'static str,
        args: usize,
        known: &'static str,
    },
}

fn read_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => " (rstmon needs a kernel built with CONFIG_DEBUG_INFO_BTF)",
        io::ErrorKind::PermissionDenied => {
            " (it is normally world-readable, mode 0444; rstmon needs no capability to read it)"
        }
        _ => "",
    }
}

/// Reads and indexes the running kernel's BTF for [`probe_layout`].
pub fn read_btf() -> Result<Btf, KernelError> {
    read_btf_at(Path::new(VMLINUX_BTF))
}

/// [`read_btf`] of another file.
pub fn read_btf_at(path: &Path) -> Result<Btf, KernelError> {
    let p = || path.display().to_string();
    Btf::read(path, BTF_NAMES).map_err(|e| match e {
        btf::ReadError::Io(source) => KernelError::BtfRead { path: p(), source },
        btf::ReadError::Parse(source) => KernelError::BtfParse { path: p(), source },
    })
}

/// Layout facts about the running kernel.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    pub offsets: TraceOffsets,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    pub reasons: BTreeMap<u32, String>,
    /// Whether the programs get the kernel's reset reason: `tcp_send_reset` has its
    /// `reason` argument (6.10+) and BTF names its values.
    pub has_reason: bool,
    /// Arguments of `tcp_send_reset` on this kernel (2 before 6.10, 3 after).
    pub send_reset_args: usize,
    /// What this kernel can do ([`features::probe`]).
    pub features: Features,
    /// Whether `sock:inet_sock_set_state` exists with (sk, oldstate, newstate).
    pub has_set_state: bool,
    /// What the verdict programs read ([`verdict::probe`]).
    pub verdict: rst_common::VerdictOffsets,
}

impl KernelLayout {
    /// Whether `tcp_send_reset` reports every reset the stack sends, also those sent
    /// without a full socket (6.10+). Where it does not, the sender side of S1, S4, S5
    /// and S6 never reaches the send tracepoint: those resets can only be seen leaving
    /// on the wire (docs/compatibility.md).
    pub fn send_reset_no_socket_traced(&self) -> bool {
        self.features.send_reset_no_socket_traced
    }
}

/// Arguments of tracepoint `tp`, or why the kernel cannot be used.
pub fn tracepoint_args(btf: &Btf, tp: &'static str) -> Result<usize, KernelError> {
    btf.tracepoint_args(tp).ok_or(KernelError::NoTracepoint(tp))
}

/// Everything the programs need to know about this kernel, from its BTF.
pub fn probe_layout(btf: &Btf) -> Result<KernelLayout, KernelError> {
    let send_reset_args = tracepoint_args(btf, SEND_RESET_TP)?;
    if !(2..=3).contains(&send_reset_args) {
        return Err(KernelError::Arity {
            tp: SEND_RESET_TP,
            args: send_reset_args,
            known: "2 (sk, skb) or 3 (sk, skb, reason)",
        });
    }
    let recv_args = tracepoint_args(btf, RECV_RESET_TP)?;
    if recv_args != 1 {
        return Err(KernelError::Arity {
            tp: RECV_RESET_TP,
            args: recv_args,
            known: "1 (sk)",
        });
    }
    let bits = |strukt: &str, path: &[&str]| btf.member_bit_offset(strukt, path);
    let missing = |strukt: &str, path: &[&str]| {
        KernelError::BtfMissing(format!("struct {strukt}.{}", path.join(".")))
    };
    // Byte offset of a member path, trying each spelling in turn.
    let offset = |strukt: &str, paths: &[&[&str]]| -> Result<u16, KernelError> {
        paths
            .iter()
            .find_map(|p| bits(strukt, p))
            .and_then(|b| u16::try_from(b / 8).ok())
            .ok_or_else(|| missing(strukt, paths[0]))
    };
    let common = |field: &'static str| offset("sock", &[&["__sk_common", field]]);

    let mut o = TraceOffsets::NONE;
    o.sk_state = common("skc_state")?;
    o.sk_family = common("skc_family")?;
    o.inet_sport = offset("inet_sock", &[&["inet_sport"]])?;
    o.sk_dport = common("skc_dport")?;
    o.inet_saddr = offset("inet_sock", &[&["inet_saddr"]])?;
    o.sk_daddr = common("skc_daddr")?;
    o.sk_v6_rcv_saddr = common("skc_v6_rcv_saddr")?;
    o.sk_v6_daddr = common("skc_v6_daddr")?;
    // sk_flags and sk_lingertime moved into sock_common (skc_*) in recent kernels.
    o.sk_flags = offset("sock", &[&["sk_flags"], &["__sk_common", "skc_flags"]])?;
    o.sk_lingertime = offset(
        "sock",
        &[&["sk_lingertime"], &["__sk_common", "skc_lingertime"]],
    )?;
    o.skb_head = offset("sk_buff", &[&["head"]])?;
    o.skb_data = offset("sk_buff", &[&["data"]])?;
    o.skb_len = offset("sk_buff", &[&["len"]])?;
    o.skb_network_header = offset("sk_buff", &[&["network_header"]])?;
    o.skb_transport_header = offset("sk_buff", &[&["transport_header"]])?;
    // One read for the five (head and data are pointers, len a u32, the headers u16s).
    if let Some((lo, len)) = rst_common::window(&[
        (o.skb_len, 4),
        (o.skb_transport_header, 2),
        (o.skb_network_header, 2),
        (o.skb_head, 8),
        (o.skb_data, 8),
    ]) {
        (o.skb_win, o.skb_win_len) = (lo, len);
    }
    o.sock_linger_bit = btf
        .enum_values("sock_flags")
        .and_then(|v| v.into_iter().find(|(n, _)| n == "SOCK_LINGER"))
        .and_then(|(_, v)| u16::try_from(v).ok())
        .ok_or_else(|| KernelError::BtfMissing("enum sock_flags.SOCK_LINGER".into()))?;
    // Optional: without them received RSTs in established connections are peer_abort.
    let bit = |field: &str| {
        bits("tcp_sock", &["rx_opt", field])
            .and_then(|b| u16::try_from(b).ok())
            .unwrap_or(OFF_NONE)
    };
    o.tp_saw_tstamp_bit = bit("saw_tstamp");
    o.tp_tstamp_ok_bit = bit("tstamp_ok");
    // Optional: attribution and connection context; a field BTF lacks is not read
    // (its sample field stays unknown).
    let opt = |strukt: &str, paths: &[&[&str]]| offset(strukt, paths).unwrap_or(OFF_NONE);
    o.sk_cgrp_cgroup = opt("sock", &[&["sk_cgrp_data", "cgroup"]]);
    o.cgroup_kn = opt("cgroup", &[&["kn"]]);
    o.kn_id = opt("kernfs_node", &[&["id"]]);
    o.sk_uid = opt("sock", &[&["sk_uid", "val"]]);
    o.sk_net = opt("sock", &[&["__sk_common", "skc_net", "net"]]);
    o.net_ns_inum = opt("net", &[&["ns", "inum"]]);
    o.sk_protocol = opt("sock", &[&["sk_protocol"]]);
    o.sk_lock_owned = opt("sock", &[&["sk_lock", "owned"]]);
    o.sk_num = opt("sock", &[&["__sk_common", "skc_num"]]);
    o.sk_listener = opt("sock", &[&["__sk_common", "skc_listener"]]);
    o.skb_dev = opt("sk_buff", &[&["dev"]]);
    o.dev_nd_net = opt("net_device", &[&["nd_net", "net"]]);
    let tp = |field: &str| opt("tcp_sock", &[&[field]]);
    o.tp_bytes_received = tp("bytes_received");
    o.tp_bytes_acked = tp("bytes_acked");
    o.tp_segs_in = tp("segs_in");
    o.tp_segs_out = tp("segs_out");
    o.tp_rcv_nxt = tp("rcv_nxt");
    o.tp_copied_seq = tp("copied_seq");
    o.tp_write_seq = tp("write_seq");
    o.tp_snd_nxt = tp("snd_nxt");
    o.tp_snd_una = tp("snd_una");
    o.tp_srtt_us = tp("srtt_us");
    o.tp_total_retrans = tp("total_retrans");
    o.tp_rcv_tstamp = tp("rcv_tstamp");
    o.tp_lsndtime = tp("lsndtime");
    o.icsk_lrcvtime = opt("tcp_sock", &[&["inet_conn", "icsk_ack", "lrcvtime"]]);
    // One read for the most of them (the two 8-byte counters, the rest u32s).
    let tp_fields = [
        (o.tp_bytes_received, 8),
        (o.tp_bytes_acked, 8),
        (o.tp_segs_in, 4),
        (o.tp_segs_out, 4),
        (o.tp_rcv_nxt, 4),
        (o.tp_copied_seq, 4),
        (o.tp_write_seq, 4),
        (o.tp_snd_nxt, 4),
        (o.tp_snd_una, 4),
        (o.tp_srtt_us, 4),
        (o.tp_total_retrans, 4),
        (o.tp_rcv_tstamp, 4),
        (o.tp_lsndtime, 4),
        (o.icsk_lrcvtime, 4),
    ];
    if let Some((lo, len)) = rst_common::best_window(&tp_fields, rst_common::TCP_WINDOW_MAX) {
        (o.tp_win, o.tp_win_len) = (lo, len);
    }
    let has_set_state = btf.tracepoint_args(SET_STATE_TP) == Some(3)
        && o.sk_protocol != OFF_NONE
        && o.sk_num != OFF_NONE;

    let reasons: BTreeMap<u32, String> = btf
        .enum_values("sk_rst_reason")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, v)| {
            let name = n.strip_prefix("SK_RST_REASON_").unwrap_or(&n).to_string();
            Some((u32::try_from(v).ok()?, name))
        })
        .collect();
    // Without names a reason value means nothing: the program does not read it and
    // the classifier takes its REASON_UNAVAILABLE path.
    let has_reason = send_reset_args >= 3 && !reasons.is_empty();
    o.send_reset_args = if has_reason { 3 } else { 2 };
    Ok(KernelLayout {
        offsets: o,
        reasons,
        has_reason,
        send_reset_args,
        features: features::probe(btf),
        has_set_state,
        verdict: verdict::probe(btf),
    })
}

/// The kernel's CONFIG_HZ (jiffies per second), from the resolution of
/// `CLOCK_MONOTONIC_COARSE`: Linux reports one tick (`TICK_NSEC`, 10^9/HZ rounded) for
/// the coarse clocks. 0 when that fails: idle times are then unknown.
pub fn hz() -> u16 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
        return 0;
    }
    hz_of_tick(res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64)
}

/// HZ of a tick of `tick_ns` nanoseconds (0 for an implausible tick).
pub fn hz_of_tick(tick_ns: u64) -> u16 {
    if !(100_000..=100_000_000).contains(&tick_ns) {
        return 0;
    }
    ((1_000_000_000 + tick_ns / 2) / tick_ns) as u16
}

/// Reads the running kernel's BTF, probes its layout and frees the BTF again.
pub fn probe() -> Result<KernelLayout, KernelError> {
    let mut l = probe_layout(&read_btf()?)?;
    l.offsets.hz = hz();
    Ok(l)
}

/// `uname -r`.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(send_args: usize, reasons: bool) -> Result<KernelLayout, KernelError> {
        probe_layout(&Btf::parse(btf::tests::kernel(send_args, reasons), BTF_NAMES).unwrap())
    }

    #[test]
    fn layout_of_a_hand_built_kernel() {
        let l = layout(3, true).unwrap();
        let o = l.offsets;
        assert!(l.has_reason);
        assert_eq!(o.send_reset_args, 3);
        assert_eq!(l.reasons.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(
            (o.sk_daddr, o.sk_dport, o.sk_family, o.sk_state),
            (0, 12, 16, 18)
        );
        assert_eq!((o.inet_saddr, o.inet_sport), (808, 814));
        assert_eq!((o.sk_v6_daddr, o.sk_v6_rcv_saddr), (56, 72));
        // sk_flags is found under its newer name, sk_lingertime under its older one.
        assert_eq!((o.sk_flags, o.sk_lingertime), (96, 576));
        assert_eq!(
            (
                o.skb_len,
                o.skb_transport_header,
                o.skb_network_header,
                o.skb_head,
                o.skb_data
            ),
            (112, 178, 180, 192, 200)
        );
        // len (112) to the end of data (208): one read of 96 bytes.
        assert_eq!((o.skb_win, o.skb_win_len), (112, 96));
        assert_eq!(o.sock_linger_bit, 4);
        assert_eq!((o.tp_saw_tstamp_bit, o.tp_tstamp_ok_bit), (13952, 13953));
    }

    #[test]
    fn hz_from_the_coarse_clock() {
        assert_eq!(hz_of_tick(4_000_000), 250);
        assert_eq!(hz_of_tick(1_000_000), 1000);
        assert_eq!(hz_of_tick(3_333_333), 300);
        assert_eq!(hz_of_tick(10_000_000), 100);
        assert_eq!(hz_of_tick(0), 0);
        // The running kernel's, against its own configuration where it can be read.
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r)",
            ])
            .output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(want) = text
                .lines()
                .find_map(|l| l.strip_prefix("CONFIG_HZ="))
                .and_then(|v| v.trim().parse::<u16>().ok())
            {
                assert_eq!(hz(), want, "CONFIG_HZ");
            }
        }
    }

    #[test]
    fn arity_decides_whether_the_reason_is_read() {
        // Before 6.10: (sk, skb).
        let l = layout(2, true).unwrap();
        assert!(!l.has_reason);
        assert_eq!((l.send_reset_args, l.offsets.send_reset_args), (2, 2));
        // A reason argument whose enum BTF does not name: not read.
        let l = layout(3, false).unwrap();
        assert!(!l.has_reason && l.reasons.is_empty());
        assert_eq!((l.send_reset_args, l.offsets.send_reset_args), (3, 2));
        let err = layout(1, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("tcp:tcp_send_reset has 1 arguments"),
            "{err}"
        );
    }

    #[test]
    fn missing_tracepoint_and_unreadable_btf_are_named() {
        let btf = Btf::parse(btf::tests::kernel(3, true), &["sock"]).unwrap();
        let err = probe_layout(&btf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel BTF has no tracepoint tcp:tcp_send_reset (typedef btf_trace_tcp_send_reset); \
             this kernel is not supported"
        );
        let err = read_btf_at(Path::new("/nonexistent/vmlinux"))
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot read kernel BTF /nonexistent/vmlinux: ")
                && err.to_string().contains("CONFIG_DEBUG_INFO_BTF"),
            "{err}"
        );
        let err = read_btf_at(Path::new("/proc/self/status")).err().unwrap();
        assert!(err.to_string().contains("does not parse"), "{err}");
    }

    /// Offsets the earlier btf-rs based code found on the build machine's kernel
    /// (6.18.44), recorded before it was replaced; other 6.18 builds agree as long as
    /// their config does not change these structs.
    #[test]
    fn running_kernel_layout() {
        let btf = match read_btf() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let l = probe_layout(&btf).unwrap();
        let o = l.offsets;
        println!("{} types; {o:?}", btf.type_count());
        if !release().starts_with("6.18.") {
            eprintln!("known values are for 6.18; only consistency checked");
        } else {
            assert_eq!(l.send_reset_args, 3);
            assert!(l.has_reason);
            // Every feature rstmon adapts to is here.
            assert_eq!(l.features, Features::ALL);
            assert!(l.send_reset_no_socket_traced());
            assert_eq!((o.sk_daddr, o.sk_dport), (0, 12));
            assert_eq!((o.inet_saddr, o.inet_sport), (808, 814));
            assert_eq!((o.sk_family, o.sk_state), (16, 18));
            assert_eq!((o.sk_v6_daddr, o.sk_v6_rcv_saddr), (56, 72));
            assert_eq!((o.sk_flags, o.sk_lingertime), (96, 576));
            assert_eq!(
                (o.skb_len, o.skb_transport_header, o.skb_network_header),
                (112, 178, 180)
            );
            assert_eq!((o.skb_head, o.skb_data), (192, 200));
            assert_eq!(o.sock_linger_bit, 4);
            assert_eq!((o.tp_saw_tstamp_bit, o.tp_tstamp_ok_bit), (13952, 13953));
            assert_eq!(l.reasons.len(), 26);
            assert_eq!(l.reasons[&1], "NO_SOCKET");
            assert_eq!(l.reasons[&14], "TCP_STATE");
            assert_eq!(l.reasons[&24], "ERROR");
        }
        assert_eq!(btf.tracepoint_args(RECV_RESET_TP), Some(1));
        assert!(o.sk_state < o.sk_v6_rcv_saddr);
    }
}
