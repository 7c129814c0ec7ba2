//! What the running kernel can do, beyond the layout of its structs: every kernel
//! feature rstmon adapts to, probed from the kernel's BTF (the enum values and types
//! the feature brought with it, never the version number). The one list the loader and
//! `rstmon check` both read ([`super::KernelLayout::features`]).

use super::Btf;

/// The BTF names [`probe`] looks up (part of [`super::BTF_NAMES`]).
pub const NAMES: [&str; 4] = [
    "bpf_func_id",
    "bpf_map_type",
    "bpf_attach_type",
    "trace_event_raw_tcp_send_reset",
];

/// Kernel features, each with the release that brought it upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `bpf_ktime_get_coarse_ns` (5.11): the wire sampler's clock. Without it the
    /// loader makes the program read the precise `bpf_ktime_get_ns` instead.
    pub coarse_clock: bool,
    /// The BPF ring buffer (5.8): samples travel through it; rstmon cannot run without.
    pub ringbuf: bool,
    /// XDP attached as a bpf_link (5.9); netlink otherwise (aya decides by itself).
    pub xdp_link: bool,
    /// tcx links (6.6): TC programs attach as links; a `clsact` qdisc with a cls_bpf
    /// filter otherwise (aya decides by itself).
    pub tcx: bool,
    /// `tcp_send_reset` fires for every reset the TCP stack sends (6.10, "trace: tcp:
    /// fully support trace_tcp_send_reset"). Before, `tcp_v4_send_reset` and
    /// `tcp_v6_send_reset` traced only resets answered by a full socket, so resets sent
    /// without a socket (S1, S5, S6) or by a time-wait mini-socket (S4) never reach
    /// it. The same change gave the tracepoint an event class of its own, which is what
    /// BTF shows: `struct trace_event_raw_tcp_send_reset` (before, the record was the
    /// shared `trace_event_raw_tcp_event_sk_skb`).
    pub send_reset_no_socket_traced: bool,
}

impl Features {
    /// The features rstmon was designed with (6.10 and newer): all present.
    pub const ALL: Self = Self {
        coarse_clock: true,
        ringbuf: true,
        xdp_link: true,
        tcx: true,
        send_reset_no_socket_traced: true,
    };

    /// The optional features as (name, present, what rstmon does without it), in the
    /// order `rstmon check` lists them. The ring buffer is not optional.
    pub fn optional(&self) -> [(&'static str, bool, &'static str); 3] {
        [
            (
                "coarse clock",
                self.coarse_clock,
                "the sampler reads the precise clock",
            ),
            ("XDP link", self.xdp_link, "XDP attaches through netlink"),
            ("tcx", self.tcx, "TC attaches through a clsact qdisc"),
        ]
    }
}

fn has_enum_value(btf: &Btf, enum_name: &str, value: &str) -> bool {
    btf.enum_values(enum_name)
        .is_some_and(|v| v.iter().any(|(n, _)| n == value))
}

/// Probes the features from the kernel's BTF.
pub fn probe(btf: &Btf) -> Features {
    Features {
        coarse_clock: has_enum_value(btf, "bpf_func_id", "BPF_FUNC_ktime_get_coarse_ns"),
        ringbuf: has_enum_value(btf, "bpf_map_type", "BPF_MAP_TYPE_RINGBUF"),
        xdp_link: has_enum_value(btf, "bpf_attach_type", "BPF_XDP"),
        tcx: has_enum_value(btf, "bpf_attach_type", "BPF_TCX_EGRESS"),
        send_reset_no_socket_traced: btf
            .member_bit_offset("trace_event_raw_tcp_send_reset", &["skbaddr"])
            .is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf::{kind, tests::Builder};

    /// A kernel's BTF with (`new`) or without the features' enum values and types.
    fn btf(new: bool) -> Btf {
        let mut b = Builder::new();
        b.filler();
        let ptr = b.ptr(0);
        let mut funcs = vec![("BPF_FUNC_unspec", 0), ("BPF_FUNC_ktime_get_ns", 5)];
        let mut maps = vec![("BPF_MAP_TYPE_HASH", 1)];
        let mut attach = vec![("BPF_CGROUP_INET_INGRESS", 0)];
        if new {
            funcs.push(("BPF_FUNC_ktime_get_coarse_ns", 160));
            maps.push(("BPF_MAP_TYPE_RINGBUF", 27));
            attach.push(("BPF_XDP", 37));
            attach.push(("BPF_TCX_EGRESS", 47));
        }
        b.enum32("bpf_func_id", &funcs);
        b.enum32("bpf_map_type", &maps);
        b.enum32("bpf_attach_type", &attach);
        let record = if new {
            "trace_event_raw_tcp_send_reset"
        } else {
            "trace_event_raw_tcp_event_sk_skb"
        };
        b.composite(kind::STRUCT, record, 16, &[("skbaddr", ptr, 64, 0)]);
        Btf::parse(b.build(), &NAMES).unwrap()
    }

    #[test]
    fn features_of_a_new_and_an_old_kernel() {
        assert_eq!(probe(&btf(true)), Features::ALL);
        assert_eq!(
            probe(&btf(false)),
            Features {
                coarse_clock: false,
                ringbuf: false,
                xdp_link: false,
                tcx: false,
                send_reset_no_socket_traced: false,
            }
        );
        // Nothing of it in BTF at all: nothing claimed.
        let empty = Btf::parse(Builder::new().build(), &NAMES).unwrap();
        assert!(!probe(&empty).coarse_clock && !probe(&empty).send_reset_no_socket_traced);
    }
}
