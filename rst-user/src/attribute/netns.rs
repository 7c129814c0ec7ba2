//! Network namespaces by inode number: the named ones (`/var/run/netns/<name>`, what
//! `ip netns add` makes), the initial one, and for the others a process living in it.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::Path,
};

/// Where `ip netns` keeps its names.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Processes a scan for a namespace's owner looks at, at most.
pub const PROC_SCAN_LIMIT: usize = 100_000;

/// Inode → name of the named namespaces in `dir`.
pub fn named(dir: &Path) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        // The bind mount's inode is the namespace's (nsfs); an unmounted file is not.
        if let Ok(md) = fs::metadata(e.path())
            && md.dev() != 0
            && let Ok(ino) = u32::try_from(md.ino())
        {
            out.insert(ino, e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Inode of the initial network namespace: fixed by the kernel (`PROC_NET_INIT_INO`,
/// include/linux/proc_ns.h, since Linux 3.8), so PID 1 need not be readable.
pub const INIT_NET_INO: u32 = 0xEFFF_FFF9;

/// Inode of the initial network namespace.
pub fn initial() -> Option<u32> {
    Some(INIT_NET_INO)
}

/// Inode of the namespace a `/proc/<pid>/ns/net` link (or any nsfs file) points to.
pub fn ns_inode(p: &Path) -> Option<u32> {
    fs::metadata(p)
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// For each namespace of `wanted`, the cgroup v2 path of a process living in it (the
/// first one found): for a reset without a socket in an unnamed namespace (a
/// container's). One pass over `/proc`.
pub fn owner_cgroups(wanted: &HashSet<u32>) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten().take(PROC_SCAN_LIMIT) {
        if out.len() == wanted.len() {
            break;
        }
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(ino) = ns_inode(&Path::new("/proc").join(pid).join("ns/net")) else {
            continue;
        };
        if wanted.contains(&ino)
            && !out.contains_key(&ino)
            && let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            && let Some(path) = v2_path(&text)
        {
            out.insert(ino, path.to_string());
        }
    }
    out
}

/// The cgroup v2 path of a `/proc/<pid>/cgroup` text (its `0::` line).
pub fn v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_line_of_proc_cgroup() {
        let text = "9:name=systemd:/\n8:pids:/\n0::/rstmon.slice/x.service\n";
        assert_eq!(v2_path(text), Some("/rstmon.slice/x.service"));
        assert_eq!(v2_path("1:cpu:/\n"), None);
    }

    #[test]
    fn this_process_is_in_a_namespace_it_can_find() {
        let me = ns_inode(Path::new("/proc/self/ns/net")).expect("own netns");
        let found = owner_cgroups(&HashSet::from([me, 1]));
        assert!(
            found.contains_key(&me) && !found.contains_key(&1),
            "{found:?}"
        );
        // This machine's tests run in the initial namespace.
        if std::env::var_os("RSTMON_NOT_INIT_NET").is_none() {
            assert_eq!(me, INIT_NET_INO);
        }
    }
}
