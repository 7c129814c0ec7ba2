//! What the running kernel looks like: tracefs, tracepoint record layouts, struct
//! offsets and reset-reason names. Rust eBPF gets no CO-RE relocations, so everything
//! the programs read is located here at start-up and passed in as globals.

pub mod btf;
pub mod caps;
pub mod tracefs;

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use rst_common::{OFF_NONE, TraceOffsets};

pub use btf::KernelBtf;
pub use tracefs::{
    Tracefs, ensure_tracefs, read_format, reasons_from_print_fmt, tracepoint_offsets,
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0} (needs CAP_SYS_ADMIN)"
    )]
    TracefsMount(io::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: PathBuf, source: io::Error },
    #[error("tracepoint {0} lacks field `{1}`; this kernel's layout is not supported")]
    MissingField(&'static str, &'static str),
    #[error(
        "cannot read kernel BTF at {VMLINUX_BTF}: {0} (rstmon needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    Btf(String),
    #[error("kernel BTF has no {0}")]
    BtfMissing(String),
}

/// Layout facts about the running kernel.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    pub offsets: TraceOffsets,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    pub reasons: BTreeMap<u32, String>,
    /// Whether `tcp:tcp_send_reset` carries a `reason` field (6.10+).
    pub has_reason: bool,
}

/// Everything the programs need to know about this kernel.
pub fn probe_layout(tracefs: &Path, btf: &KernelBtf) -> Result<KernelLayout, KernelError> {
    let send = read_format(tracefs, "tcp_send_reset")?;
    let recv = read_format(tracefs, "tcp_receive_reset")?;
    let mut o = TraceOffsets::NONE;
    tracepoint_offsets(&send, &recv, &mut o)?;
    o.sk_state = btf.member_offset("sock", &["__sk_common", "skc_state"])?;
    // sk_flags moved into sock_common (skc_flags) in recent kernels.
    o.sk_flags = btf
        .member_offset("sock", &["sk_flags"])
        .or_else(|_| btf.member_offset("sock", &["__sk_common", "skc_flags"]))?;
    o.sk_lingertime = btf
        .member_offset("sock", &["sk_lingertime"])
        .or_else(|_| btf.member_offset("sock", &["__sk_common", "skc_lingertime"]))?;
    o.skb_head = btf.member_offset("sk_buff", &["head"])?;
    o.skb_data = btf.member_offset("sk_buff", &["data"])?;
    o.skb_len = btf.member_offset("sk_buff", &["len"])?;
    o.skb_transport_header = btf.member_offset("sk_buff", &["transport_header"])?;
    o.sock_linger_bit = btf
        .enumerator("sock_flags", "SOCK_LINGER")
        .ok_or_else(|| KernelError::BtfMissing("enum sock_flags.SOCK_LINGER".into()))?
        as u16;
    // Optional: without them received RSTs in established connections are peer_abort.
    let bit = |field: &str| {
        btf.member_bit_offset("tcp_sock", &["rx_opt", field])
            .ok()
            .and_then(|b| u16::try_from(b).ok())
            .unwrap_or(OFF_NONE)
    };
    o.tp_saw_tstamp_bit = bit("saw_tstamp");
    o.tp_tstamp_ok_bit = bit("tstamp_ok");
    let has_reason = o.sr_reason != OFF_NONE;
    let mut reasons: BTreeMap<u32, String> = btf
        .enum_values("sk_rst_reason")
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (v, n.trim_start_matches("SK_RST_REASON_").to_string()))
        .collect();
    if reasons.is_empty() {
        reasons = reasons_from_print_fmt(&send.print_fmt);
    }
    Ok(KernelLayout {
        offsets: o,
        reasons,
        has_reason,
    })
}

/// `uname -r`.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
