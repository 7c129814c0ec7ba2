//! Network interfaces of this namespace, from /sys/class/net.

use std::{fs, path::Path};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    pub loopback: bool,
}

fn read_u32(path: &Path, hex: bool) -> Option<u32> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    if hex {
        u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    } else {
        s.parse().ok()
    }
}

/// One interface by name, or `None` if it does not exist.
pub fn by_name(name: &str) -> Option<Iface> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let dir = Path::new("/sys/class/net").join(name);
    let ifindex = read_u32(&dir.join("ifindex"), false)?;
    let flags = read_u32(&dir.join("flags"), true).unwrap_or(0);
    Some(Iface {
        name: name.to_string(),
        ifindex,
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
    })
}

/// Every interface, sorted by ifindex.
pub fn all() -> Vec<Iface> {
    let mut out: Vec<Iface> = fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| by_name(&e.file_name().to_string_lossy()))
        .collect();
    out.sort_by_key(|i| i.ifindex);
    out
}

/// The default set: every non-loopback interface that is up.
pub fn default_set() -> Vec<Iface> {
    all().into_iter().filter(|i| i.up && !i.loopback).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_flagged() {
        let lo = by_name("lo").expect("every namespace has lo");
        assert!(lo.loopback);
        assert!(!default_set().iter().any(|i| i.name == "lo"));
    }

    #[test]
    fn bad_names_are_unknown() {
        assert_eq!(by_name("no-such-if0"), None);
        assert_eq!(by_name("../lo"), None);
        assert_eq!(by_name(""), None);
    }
}
