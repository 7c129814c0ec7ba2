//! What the privileged integration tests share: [`rst_testkit`], with the binary under
//! test filled in (only this crate knows where cargo built it).

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses a different subset"
)]

use std::{
    io,
    net::{SocketAddr, TcpStream},
    process::Command,
};

pub use rst_testkit::{
    Daemon, EXIT_TIMEOUT, IO_TIMEOUT, Metrics, Response, Rstmon, START_TIMEOUT, Series, http_get,
    promtool, run_to_exit, xdp_attachment,
};
use rst_user::netns::Ns;

pub mod systemd;

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

/// `n` connects from inside `ns` to `to`; every one must be refused (an RST answers the
/// SYN).
pub fn connect_refused(ns: &Ns, to: SocketAddr, n: i64) {
    let result = ns
        .run(|| {
            for i in 0..n {
                match TcpStream::connect_timeout(&to, IO_TIMEOUT) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    other => {
                        return Err(format!(
                            "connect #{i} to {to}: {other:?}; want connection refused"
                        ));
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("entering namespace {}: {e}", ns.name));
    if let Err(e) = result {
        panic!("in {}: {e}", ns.name);
    }
}

/// Asserts that series `name{labels}` grew by exactly `want` between two scrapes.
pub fn assert_delta(
    after: &Metrics,
    before: &Metrics,
    name: &str,
    labels: &[(&str, &str)],
    want: i64,
    ctx: &str,
) {
    let got = after.delta(before, name, labels);
    let series = Series::new(name, labels);
    println!("{ctx}: {series} +{got}");
    assert_eq!(got, want, "{ctx}: {series} grew by {got}, want {want}");
}

/// The sum over every series named `name` having (at least) `labels` of its growth
/// between two scrapes (a series new in `after` counts from 0).
pub fn sum_delta(after: &Metrics, before: &Metrics, name: &str, labels: &[(&str, &str)]) -> i64 {
    after
        .matching(name, labels)
        .into_iter()
        .map(|(s, v)| {
            let l: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            v as i64 - before.get(name, &l).unwrap_or(0.0) as i64
        })
        .sum()
}
