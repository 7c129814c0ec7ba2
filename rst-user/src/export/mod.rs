//! Export: a [`snapshot::Snapshot`] read from the kernel maps at scrape time, its
//! Prometheus text [`exposition`] (the per-interface series from text kept in an
//! [`iftable`] while the interfaces stay the same), and the HTTP [`server`] on its
//! [`http`] connection handling,
//! with the exporter conventions around it: the web configuration file ([`webconfig`],
//! [`tls`]), listen addresses ([`listen`]), `process_*` metrics ([`process`]) and build
//! facts ([`info`]).

pub mod exposition;
pub mod family;
pub mod http;
pub mod iftable;
pub mod info;
pub mod listen;
pub mod process;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod webconfig;
