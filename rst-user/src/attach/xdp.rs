//! Attaching the XDP program to one interface, in the mode asked for.

use aya::programs::{Xdp, XdpMode, xdp::XdpLinkId};
use tracing::info;

use super::error::{LoadError, has_errno};

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic mode where the driver has none.
    Auto,
    Native,
    Generic,
}

/// Attaches `prog` to `ifindex`; returns the link and the mode used (`native` or
/// `generic`). An interface that already has an XDP program is [`LoadError::XdpBusy`]:
/// rstmon never replaces one.
pub fn attach(
    prog: &mut Xdp,
    name: &str,
    ifindex: u32,
    mode: XdpModeArg,
) -> Result<(XdpLinkId, &'static str), LoadError> {
    let busy = |e: &aya::programs::ProgramError| has_errno(e, &[libc::EBUSY, libc::EEXIST]);
    let fail = |error| {
        if busy(&error) {
            LoadError::XdpBusy(name.to_string())
        } else {
            LoadError::XdpAttach {
                iface: name.to_string(),
                error,
            }
        }
    };
    let mut try_mode = |m: XdpMode, label: &'static str| {
        prog.attach_to_if_index(ifindex, m)
            .map(|link| (link, label))
    };
    match mode {
        XdpModeArg::Native => try_mode(XdpMode::Driver, "native").map_err(fail),
        XdpModeArg::Generic => try_mode(XdpMode::Skb, "generic").map_err(fail),
        XdpModeArg::Auto => match try_mode(XdpMode::Driver, "native") {
            Ok(r) => Ok(r),
            Err(e) if busy(&e) => Err(LoadError::XdpBusy(name.to_string())),
            Err(e) => {
                info!(
                    interface = %name,
                    "native XDP unavailable ({e}); using generic (skb) mode"
                );
                try_mode(XdpMode::Skb, "generic").map_err(fail)
            }
        },
    }
}
