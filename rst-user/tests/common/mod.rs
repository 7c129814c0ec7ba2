//! What the privileged integration tests share: [`rst_testkit`], with the binary under
//! test filled in (only this crate knows where cargo built it).

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different subset"
)]

use std::{net::SocketAddr, process::Command};

pub use rst_testkit::{
    Daemon, EXIT_TIMEOUT, IO_TIMEOUT, Metrics, Response, Rstmon, START_TIMEOUT, Series, http_get,
    promtool, run_to_exit, xdp_attachment,
};
use rst_user::netns::Ns;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rstmon");

/// `rstmon run` of the binary under test, to configure further ([`Rstmon`]).
pub fn rstmon() -> Rstmon {
    Rstmon::new(BIN)
}

/// `rstmon run -i IFACE... --web.listen-address ADDR` inside `ns`, as a command.
pub fn run_command(ns: &Ns, ifaces: &[&str], listen: SocketAddr) -> Command {
    rstmon().ifaces(ifaces).listen(listen).command(ns)
}
