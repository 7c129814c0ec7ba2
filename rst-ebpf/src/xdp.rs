//! `rstmon_xdp`: counts every ingress TCP RST exactly, marks it for its verdict
//! (`verdict.rs`) and samples it, and learns the peer's TTL from SYNs; `rstmon_xdp_noop`,
//! the benchmark baseline.

use core::ptr::read_volatile;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use rst_common::{
    DIR_INGRESS, FAMILY_IPV6, Stat, TCP_ACK, TCP_RST, TCP_SYN,
    parse::{parse_tcp, surely_not},
};

use crate::{
    WINDOW_WIRE, WIRE_SAMPLES_PER_SEC,
    util::stat_add,
    wire::{count_wire, take_sample, wire_sample},
};

#[xdp]
pub fn rstmon_xdp(ctx: XdpContext) -> u32 {
    // The path nearly every packet takes is the limit baseline's own tests and nothing
    // else; the rest is a subprogram, so that this entry keeps its few values in the
    // argument registers and the JIT saves no callee-saved register for it.
    if surely_not(ctx.data(), ctx.data_end(), TCP_RST | TCP_SYN) {
        return xdp_action::XDP_PASS;
    }
    rst_or_syn(ctx)
}

/// `rstmon_xdp` for a frame the fixed-offset test did not rule out: the whole parse,
/// then an RST's count, verdict mark and sample, or a SYN's TTL.
#[inline(never)]
fn rst_or_syn(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    // RSTs, and SYNs for the peer's TTL: the non-matching path is the same one test.
    let Some(rst) = parse_tcp(start, end, TCP_RST | TCP_SYN) else {
        return xdp_action::XDP_PASS;
    };
    if rst.flags & TCP_RST == 0 {
        crate::verdict::learn_ttl(start, end, rst.l3, rst.l4, rst.family);
        return xdp_action::XDP_PASS;
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    crate::verdict::mark(start, end, &rst, ifindex);
    count_wire(
        ifindex,
        DIR_INGRESS,
        (rst.family == FAMILY_IPV6) as u32,
        (rst.flags & TCP_ACK != 0) as u32,
    );

    // SAFETY: a plain read of a load-time constant.
    let rate = unsafe { read_volatile(&WIRE_SAMPLES_PER_SEC) };
    if rate == 0 {
        // Sampling is off: nothing was limited.
        return xdp_action::XDP_PASS;
    }
    if !take_sample(rate, WINDOW_WIRE) {
        stat_add(Stat::WireRateLimited);
        return xdp_action::XDP_PASS;
    }
    crate::verdict::mark_sampled();
    wire_sample(start, end, ifindex, DIR_INGRESS, 0);
    xdp_action::XDP_PASS
}

/// Benchmark baseline: the cheapest possible XDP program.
#[xdp]
pub fn rstmon_xdp_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
