//! Attaching the TC egress program to one interface.
//!
//! * Linux 6.6+: a tcx link (`BPF_LINK_CREATE`, `BPF_TCX_EGRESS`), placed **first** in
//!   the interface's egress chain, so that rstmon sees every packet the host hands to
//!   the device whatever the programs after it decide (they still run: rstmon returns
//!   `TCX_NEXT`). The kernel releases the link when rstmon exits, even by SIGKILL.
//! * Older kernels: a cls_bpf filter (direct action) on the `clsact` qdisc, which is
//!   added when the interface has none (EEXIST: it has one, shared with others). rstmon
//!   removes its own filter when it detaches, never the qdisc: other tools' filters may
//!   sit on it, and an empty clsact qdisc changes nothing. A filter outlives a SIGKILL
//!   (netlink filters are not bpf links).

use aya::{
    programs::{SchedClassifier, TcAttachType, tc, tc::SchedClassifierLinkId},
    util::KernelVersion,
};

use super::error::LoadError;

/// `rstmon_tc_attached` modes.
pub const MODE_TCX: &str = "tcx";
pub const MODE_CLSACT: &str = "clsact";

/// Attaches `prog` to the egress of `name`; returns the link and the mode used.
pub fn attach(
    prog: &mut SchedClassifier,
    name: &str,
) -> Result<(SchedClassifierLinkId, &'static str), LoadError> {
    let fail = |error| LoadError::TcAttach {
        iface: name.to_string(),
        error,
    };
    // What aya's own `attach` decides by (it reads the same version).
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    if tcx {
        let options = tc::TcAttachOptions::TcxOrder(aya::programs::LinkOrder::first());
        return prog
            .attach_with_options(name, TcAttachType::Egress, options)
            .map(|l| (l, MODE_TCX))
            .map_err(fail);
    }
    match tc::qdisc_add_clsact(name) {
        Ok(()) => {}
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(fail(e.into())),
    }
    prog.attach(name, TcAttachType::Egress)
        .map(|l| (l, MODE_CLSACT))
        .map_err(fail)
}
