//! Export: a [`snapshot::Snapshot`] read from the kernel maps at scrape time, its
//! Prometheus text [`exposition`], and the HTTP [`server`] on its [`http`] connection
//! handling.

pub mod exposition;
pub mod family;
pub mod http;
pub mod server;
pub mod snapshot;
