//! Export: a [`snapshot::Snapshot`] read from the kernel maps at scrape time, its
//! Prometheus text [`exposition`], and the HTTP [`server`].

pub mod exposition;
pub mod family;
pub mod server;
pub mod snapshot;
