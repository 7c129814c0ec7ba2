//! The daemon's sample stream for local watchers: `rstmon run` serves its classified
//! samples on a Unix socket ([`server`]), `rstmon watch` reads them ([`client`]), both
//! narrowed by the same [`filter`].
//!
//! Protocol (version [`PROTOCOL`]), JSON lines both ways:
//!
//! 1. the watcher sends one line, `{"watch":1,"filter":{...}}` (a [`filter::FilterSpec`]);
//! 2. the daemon answers `{"hello":{"rstmon":"<version>","protocol":1}}`, or
//!    `{"error":"<why>"}` and closes;
//! 3. then the samples, each exactly a `watch --json` object, and control lines:
//!    `{"dropped":N}` (N samples this watcher's queue had no room for since the last
//!    such line) and `{"error":"<why>"}` (the daemon is closing the stream).
//!
//! A sample always has `direction`; a control line never does.

pub mod client;
pub mod filter;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    attach::controller::SharedInterfaces,
    attribute::Names,
    present::{join::Joiner, line::boot_offset_ns, sample::Presenter},
    sources::Event,
};

/// Where `rstmon run` serves the stream and `rstmon watch` looks for it.
pub const DEFAULT_SOCKET: &str = "/run/rstmon/watch.sock";

/// The protocol version of the hello lines.
pub const PROTOCOL: u32 = 1;

/// The watcher's first line.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The protocol version the watcher speaks.
    pub watch: u32,
    #[serde(default)]
    pub filter: filter::FilterSpec,
}

/// The daemon's hello.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub rstmon: String,
    pub protocol: u32,
}

/// A line from the daemon that is not a sample.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Hello(Hello),
    Dropped(u64),
    Error(String),
}

impl Control {
    /// The line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("control lines serialize")
    }
}

/// Turns ring-buffer events into `watch --json` objects: the presenter's context, with
/// interface names refreshed from the controller when a sample names an interface this
/// copy does not know, and the verdict join ([`Joiner`]).
pub struct Encoder {
    reasons: BTreeMap<u32, String>,
    interfaces: SharedInterfaces,
    ifnames: BTreeMap<u32, String>,
    boot_offset_ns: i128,
    /// Names of cgroups and namespaces, looked up without waiting (a sample of an id
    /// seen for the first time names it by the id; the next one by its name).
    names: Option<Names>,
    join: Joiner,
}

impl Encoder {
    pub fn new(
        reasons: BTreeMap<u32, String>,
        interfaces: SharedInterfaces,
        names: Option<Names>,
    ) -> Self {
        Self {
            reasons,
            interfaces,
            ifnames: BTreeMap::new(),
            boot_offset_ns: boot_offset_ns(),
            names,
            join: Joiner::default(),
        }
    }

    fn presenter(&self) -> Presenter<'_> {
        Presenter {
            reasons: &self.reasons,
            ifnames: &self.ifnames,
            boot_offset_ns: self.boot_offset_ns,
            names: self.names.as_ref(),
        }
    }

    /// The JSON objects one event completes: none while an ingress wire sample waits
    /// for its verdict, several when a verdict completes held ones.
    pub fn encode(&mut self, ev: &Event) -> Vec<Value> {
        if let Event::Wire(w) = ev
            && !self.ifnames.contains_key(&w.ifindex)
        {
            self.ifnames = self
                .interfaces
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .ifnames();
        }
        let mut join = std::mem::take(&mut self.join);
        let out = join.push(&self.presenter(), ev);
        self.join = join;
        out
    }

    /// After a drain of the ring buffer that began at `drained_ns` (CLOCK_MONOTONIC): the
    /// held wire samples whose verdict can no longer come (`ignored`).
    pub fn drained(&mut self, drained_ns: u64) -> Vec<Value> {
        self.join.drained(drained_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines() {
        assert_eq!(Control::Dropped(7).line(), r#"{"dropped":7}"#);
        assert_eq!(
            Control::Hello(Hello {
                rstmon: "0.1.0".into(),
                protocol: PROTOCOL
            })
            .line(),
            r#"{"hello":{"rstmon":"0.1.0","protocol":1}}"#
        );
        assert_eq!(
            serde_json::from_str::<Control>(r#"{"error":"no"}"#).unwrap(),
            Control::Error("no".into())
        );
        // A sample is not a control line.
        assert!(serde_json::from_str::<Control>(r#"{"direction":"sent"}"#).is_err());
    }

    #[test]
    fn request_defaults_to_no_filter() {
        let r: Request = serde_json::from_str(r#"{"watch":1}"#).unwrap();
        assert_eq!(r.watch, 1);
        assert_eq!(r.filter, filter::FilterSpec::default());
    }
}
