//! Attach and lifecycle: loading the object and attaching the tracing hooks
//! ([`loader`]), XDP per interface ([`xdp`]), TC egress per interface ([`tc`]), which
//! interfaces ([`select`]), and the
//! [`controller`] that follows them as they come and go.

pub mod controller;
pub mod error;
pub mod loader;
pub mod select;
pub mod tc;
pub mod xdp;

pub use error::LoadError;
pub use loader::{Config, EBPF_OBJECT, Monitor, Programs, install_tc_sampler, possible_cpus};
pub use xdp::XdpModeArg;
