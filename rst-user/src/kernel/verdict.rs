//! What the verdict programs need to know about the running kernel (BTF): the arity of
//! `skb:kfree_skb` and the drop reasons that tell a challenged RST (`TCP_RESET`) and a
//! segment for no socket (`NO_SOCKET`).

use rst_common::VerdictOffsets;

use super::Btf;

/// The raw tracepoint of the challenged verdict and the `alive_after_reset` signal.
pub const KFREE_SKB_TP: &str = "kfree_skb";

/// The BTF names [`probe`] looks up (part of [`super::BTF_NAMES`]).
pub const BTF_NAMES: [&str; 2] = ["skb_drop_reason", "btf_trace_kfree_skb"];

/// The verdict layout of this kernel. `kfree_args` stays 0 (the program is not
/// attached) without a `reason` argument of `kfree_skb` (before 5.17) or without
/// `SKB_DROP_REASON_TCP_RESET` in BTF: no RST is told challenged then (they count as
/// ignored) and `alive_after_reset` is never raised.
pub fn probe(btf: &Btf) -> VerdictOffsets {
    let mut v = VerdictOffsets::NONE;
    let args = btf.tracepoint_args(KFREE_SKB_TP).unwrap_or(0);
    v.reason_tcp_reset = drop_reason(btf, "TCP_RESET").unwrap_or(u32::MAX);
    v.reason_no_socket = drop_reason(btf, "NO_SOCKET").unwrap_or(u32::MAX);
    if args >= 3 && v.reason_tcp_reset != u32::MAX {
        v.kfree_args = args.min(4) as u16;
    }
    v
}

/// Whether the kernel tells challenged RSTs (the `kfree_skb` program is attached).
pub fn tells_challenged(v: &VerdictOffsets) -> bool {
    v.kfree_args >= 3
}

/// The value of `SKB_DROP_REASON_<name>` on this kernel.
pub fn drop_reason(btf: &Btf, name: &str) -> Option<u32> {
    let full = format!("SKB_DROP_REASON_{name}");
    btf.enum_values("skb_drop_reason")?
        .into_iter()
        .find(|(n, _)| *n == full)
        .and_then(|(_, v)| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_indexed() {
        for n in BTF_NAMES {
            assert!(super::super::BTF_NAMES.contains(&n), "{n} missing");
        }
    }

    /// On the running kernel (skipped without BTF): 6.18 has all of it.
    #[test]
    fn running_kernel_verdict_layout() {
        let btf = match super::super::read_btf() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let v = probe(&btf);
        println!("{v:?}");
        if super::super::release().starts_with("6.18.") {
            assert_eq!(v.kfree_args, 4);
            assert_ne!(v.reason_tcp_reset, u32::MAX);
            assert_ne!(v.reason_no_socket, u32::MAX);
            assert_ne!(v.reason_tcp_reset, v.reason_no_socket);
        }
    }
}
