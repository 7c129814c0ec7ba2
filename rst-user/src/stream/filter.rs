//! `watch` filters: `--cause`, `--side`, `--port`, `--addr`, `--netns`, `--workload` and
//! (daemon mode) `-i`, over a sample's JSON object.
//!
//! A filter is carried as a [`FilterSpec`] (what the command line said, also the `filter`
//! of a watcher's hello) and compiled into a [`Filter`], which validates it. It runs over
//! the JSON object of the sample, the unit of the stream, so it works the same in the
//! daemon and in a standalone `watch`, and on any field a sample carries (`netns` and
//! `workload` included: a sample without the field does not match a filter on it).
//!
//! Different flags must all match; the values of one flag are alternatives.

use std::net::IpAddr;

use glob::Pattern;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    attach::select::Selection,
    classify::{RecvCause, SendCause},
};

/// The `--side` values: the `direction` field of a sample.
pub const SIDES: [&str; 3] = ["sent", "received", "wire"];

/// A filter as given: the command line's values, and the `filter` object of a hello.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSpec {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cause: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub side: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<u16>,
    /// CIDRs (`10.0.0.0/8`, `fd00::/16`) or single addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addr: Vec<String>,
    /// Network namespace inode numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub netns: Vec<u64>,
    /// Workload names or shell-style globs (`pod:default/*`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workload: Vec<String>,
    /// Interface names or globs: narrows wire samples only (sent and received samples
    /// carry no interface).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interface: Vec<String>,
}

/// Why a filter is not valid; each is one line naming the flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown cause `{0}` (--cause); valid causes: {list}", list = all_causes().join(", "))]
    Cause(String),
    #[error("unknown side `{0}` (--side); valid sides: sent, received, wire")]
    Side(String),
    #[error("`{0}` is not an address or CIDR (--addr), e.g. 10.0.0.0/8, 192.0.2.1, fd00::/16: {1}")]
    Addr(String, &'static str),
    #[error("bad workload pattern `{0}` (--workload): {1}")]
    Workload(String, String),
    #[error("{0} (-i)")]
    Interface(String),
}

/// Every cause of both vocabularies, sent first; `other` once.
pub fn all_causes() -> Vec<&'static str> {
    let mut all: Vec<&str> = SendCause::ALL.iter().map(|c| c.label()).collect();
    for c in RecvCause::ALL {
        if !all.contains(&c.label()) {
            all.push(c.label());
        }
    }
    all
}

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR/LEN` or a bare `ADDR` (a /32 or /128). Host bits may be set (`10.1.2.3/8`
    /// is 10.0.0.0/8), as `ip` accepts them.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let bad = |why| FilterError::Addr(s.to_string(), why);
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = a.parse().map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match len {
            None => max,
            Some(l) => {
                let p: u8 = l
                    .parse()
                    .map_err(|_| bad("the prefix length is not a number"))?;
                if p > max {
                    return Err(bad(if max == 32 {
                        "an IPv4 prefix length is at most 32"
                    } else {
                        "an IPv6 prefix length is at most 128"
                    }));
                }
                p
            }
        };
        Ok(Self { net, prefix })
    }

    /// Whether `ip` is inside; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, a
    /// dual-stack socket's view) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), self.prefix, 32)
                    == masked(u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` of the `width` low bits of `v`.
fn masked(v: u128, prefix: u8, width: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        v >> (width - u32::from(prefix))
    }
}

/// A compiled, valid filter.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    causes: Vec<String>,
    sides: Vec<String>,
    ports: Vec<u16>,
    addrs: Vec<Cidr>,
    netns: Vec<u64>,
    workloads: Vec<Pattern>,
    /// Narrows wire samples; `None` without `-i`.
    interfaces: Option<Selection>,
}

impl Filter {
    /// Validates and compiles `spec`.
    pub fn new(spec: &FilterSpec) -> Result<Self, FilterError> {
        let known = all_causes();
        if let Some(c) = spec.cause.iter().find(|c| !known.contains(&c.as_str())) {
            return Err(FilterError::Cause(c.clone()));
        }
        if let Some(s) = spec.side.iter().find(|s| !SIDES.contains(&s.as_str())) {
            return Err(FilterError::Side(s.clone()));
        }
        let addrs = spec
            .addr
            .iter()
            .map(|a| Cidr::parse(a))
            .collect::<Result<_, _>>()?;
        let workloads = spec
            .workload
            .iter()
            .map(|w| Pattern::new(w).map_err(|e| FilterError::Workload(w.clone(), e.to_string())))
            .collect::<Result<_, _>>()?;
        let interfaces = if spec.interface.is_empty() {
            None
        } else {
            Some(
                Selection::new(&spec.interface)
                    .map_err(|e| FilterError::Interface(e.to_string()))?,
            )
        };
        Ok(Self {
            causes: spec.cause.clone(),
            sides: spec.side.clone(),
            ports: spec.port.clone(),
            addrs,
            netns: spec.netns.clone(),
            workloads,
            interfaces,
        })
    }

    /// Whether the sample (a `watch --json` object) passes.
    pub fn matches(&self, v: &Value) -> bool {
        let str_of = |k: &str| v.get(k).and_then(Value::as_str);
        let direction = str_of("direction");
        if !self.sides.is_empty() && !direction.is_some_and(|d| self.sides.iter().any(|s| s == d)) {
            return false;
        }
        if !self.causes.is_empty()
            && !str_of("cause").is_some_and(|c| self.causes.iter().any(|x| x == c))
        {
            return false;
        }
        if !self.ports.is_empty() {
            let port = |k: &str| v.get(k).and_then(Value::as_u64);
            let hit = [port("sport"), port("dport")]
                .into_iter()
                .flatten()
                .any(|p| self.ports.iter().any(|&x| u64::from(x) == p));
            if !hit {
                return false;
            }
        }
        if !self.addrs.is_empty() {
            let hit = [str_of("src"), str_of("dst")]
                .into_iter()
                .flatten()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .any(|ip| self.addrs.iter().any(|c| c.contains(ip)));
            if !hit {
                return false;
            }
        }
        if !self.netns.is_empty()
            && !v
                .get("netns")
                .and_then(Value::as_u64)
                .is_some_and(|n| self.netns.contains(&n))
        {
            return false;
        }
        if !self.workloads.is_empty()
            && !str_of("workload").is_some_and(|w| self.workloads.iter().any(|p| p.matches(w)))
        {
            return false;
        }
        if let Some(sel) = &self.interfaces
            && direction == Some("wire")
            && !str_of("interface").is_some_and(|i| sel.matches(i, true, false))
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(cause: &str, src: &str, sport: u16, dst: &str, dport: u16) -> Value {
        json!({"time": "t", "direction": "sent", "cause": cause, "family": "ipv4",
               "src": src, "sport": sport, "dst": dst, "dport": dport})
    }

    fn wire(iface: &str) -> Value {
        json!({"time": "t", "direction": "wire", "cause": null, "family": "ipv6",
               "src": "fd00::1", "sport": 9, "dst": "fd00::2", "dport": 40000,
               "interface": iface})
    }

    fn filter(spec: FilterSpec) -> Filter {
        Filter::new(&spec).unwrap()
    }

    #[test]
    fn empty_filter_passes_everything() {
        let f = filter(FilterSpec::default());
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
        assert!(f.matches(&wire("veth0")));
        assert!(f.matches(&json!({})));
    }

    #[test]
    fn cause_and_side() {
        let f = filter(FilterSpec {
            cause: vec!["no_listener".into(), "refused".into()],
            ..Default::default()
        });
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
        assert!(!f.matches(&sent("linger_abort", "10.0.0.1", 9, "10.0.0.2", 4000)));
        // A wire sample has no cause.
        assert!(!f.matches(&wire("veth0")));
        let f = filter(FilterSpec {
            side: vec!["wire".into()],
            ..Default::default()
        });
        assert!(f.matches(&wire("veth0")));
        assert!(!f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
    }

    #[test]
    fn port_matches_either_end() {
        let f = filter(FilterSpec {
            port: vec![4000],
            ..Default::default()
        });
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 4000, "10.0.0.2", 9)));
        assert!(!f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4001)));
    }

    #[test]
    fn addr_cidr_v4_v6_either_end() {
        let f = filter(FilterSpec {
            addr: vec!["10.1.0.0/16".into(), "fd00::/16".into()],
            ..Default::default()
        });
        assert!(f.matches(&sent("no_listener", "10.1.2.3", 9, "192.0.2.1", 1)));
        assert!(f.matches(&sent("no_listener", "192.0.2.1", 9, "10.1.255.255", 1)));
        assert!(!f.matches(&sent("no_listener", "10.2.0.1", 9, "192.0.2.1", 1)));
        assert!(f.matches(&wire("veth0")));
        // A dual-stack socket's view of an IPv4 peer.
        assert!(f.matches(&sent("no_listener", "::ffff:10.1.0.9", 9, "::1", 1)));
        let v6only = filter(FilterSpec {
            addr: vec!["fd00:0:0:1::/64".into()],
            ..Default::default()
        });
        assert!(!v6only.matches(&wire("veth0")));
        assert!(v6only.matches(&sent("peer_abort", "fd00:0:0:1::7", 9, "::1", 1)));
        let host = filter(FilterSpec {
            addr: vec!["192.0.2.1".into()],
            ..Default::default()
        });
        assert!(host.matches(&sent("no_listener", "10.0.0.1", 9, "192.0.2.1", 1)));
        assert!(!host.matches(&sent("no_listener", "10.0.0.1", 9, "192.0.2.2", 1)));
        let all = filter(FilterSpec {
            addr: vec!["0.0.0.0/0".into()],
            ..Default::default()
        });
        assert!(all.matches(&sent("no_listener", "10.0.0.1", 9, "192.0.2.2", 1)));
        assert!(!all.matches(&wire("veth0")));
    }

    #[test]
    fn netns_and_workload_need_the_field() {
        let f = filter(FilterSpec {
            netns: vec![4026531840],
            ..Default::default()
        });
        let mut s = sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000);
        assert!(!f.matches(&s), "a sample without netns does not match");
        s["netns"] = json!(4026531840u64);
        assert!(f.matches(&s));
        s["netns"] = json!(4026532000u64);
        assert!(!f.matches(&s));

        let f = filter(FilterSpec {
            workload: vec!["nginx.service".into(), "pod:default/*".into()],
            ..Default::default()
        });
        assert!(!f.matches(&s), "a sample without workload does not match");
        s["workload"] = json!("nginx.service");
        assert!(f.matches(&s));
        s["workload"] = json!("pod:default/web-0");
        assert!(f.matches(&s));
        s["workload"] = json!("pod:kube-system/dns");
        assert!(!f.matches(&s));
    }

    #[test]
    fn interface_narrows_wire_samples_only() {
        let f = filter(FilterSpec {
            interface: vec!["veth*".into()],
            ..Default::default()
        });
        assert!(f.matches(&wire("veth0")));
        assert!(!f.matches(&wire("eth0")));
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
    }

    #[test]
    fn flags_combine_with_and() {
        let f = filter(FilterSpec {
            side: vec!["sent".into()],
            port: vec![9],
            ..Default::default()
        });
        assert!(f.matches(&sent("no_listener", "10.0.0.1", 9, "10.0.0.2", 4000)));
        assert!(!f.matches(&wire("veth0")), "port 9 but not sent");
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let err = Filter::new(&FilterSpec {
            cause: vec!["nope".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`nope`") && err.contains("no_listener") && err.contains("refused"));
        assert!(!err.contains('\n'));
        assert_eq!(all_causes().iter().filter(|c| **c == "other").count(), 1);
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host",
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(matches!(
            Filter::new(&FilterSpec {
                side: vec!["both".into()],
                ..Default::default()
            }),
            Err(FilterError::Side(_))
        ));
        assert!(
            Filter::new(&FilterSpec {
                workload: vec!["[".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown_fields() {
        let spec = FilterSpec {
            cause: vec!["refused".into()],
            port: vec![9],
            ..Default::default()
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(text, r#"{"cause":["refused"],"port":[9]}"#);
        assert_eq!(serde_json::from_str::<FilterSpec>(&text).unwrap(), spec);
        assert!(serde_json::from_str::<FilterSpec>(r#"{"colour":["red"]}"#).is_err());
    }
}
