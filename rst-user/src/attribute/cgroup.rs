//! cgroup v2: where the hierarchy is mounted (from `/proc/self/mountinfo`), and the
//! walk that maps cgroup ids (kernfs ids: the inode numbers of the cgroup directories)
//! to paths.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    hash::Hash,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Directories a walk visits at most (a runaway hierarchy must not stall resolution).
pub const WALK_LIMIT: usize = 200_000;

/// The mount point of the cgroup v2 hierarchy in a `/proc/self/mountinfo` text:
/// `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on hybrid ones. The
/// first cgroup2 mount whose root is the hierarchy's root (`/`).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = pre.split_whitespace().collect();
        let mount = f.get(4)?;
        (f.get(3) == Some(&"/")).then(|| PathBuf::from(unescape(mount)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|t| u8::from_str_radix(t, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The running system's cgroup v2 mount.
pub fn find_mount() -> Option<PathBuf> {
    cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// Walks the hierarchy at `root` (at most [`WALK_LIMIT`] directories) and returns the
/// path, relative to `root` and starting with `/`, of each id in `wanted` it finds.
pub fn walk(root: &Path, wanted: &HashSet<u64>) -> HashMap<u64, String> {
    let mut found = HashMap::new();
    let mut queue = VecDeque::from([(root.to_path_buf(), String::from("/"))]);
    let mut visited = 0;
    while let Some((dir, rel)) = queue.pop_front() {
        visited += 1;
        if visited > WALK_LIMIT || found.len() == wanted.len() {
            break;
        }
        if let Ok(md) = fs::metadata(&dir)
            && wanted.contains(&md.ino())
        {
            found.insert(md.ino(), rel.clone());
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                queue.push_back((e.path(), child));
            }
        }
    }
    found
}

/// A map with a cap: beyond it the oldest entries are forgotten first.
pub struct Capped<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Eq + Hash + Clone, V> Capped<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// Inserts or replaces; a new key beyond the cap pushes the oldest out.
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
            while self.map.len() > self.cap {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
            26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,relatime shared:10 - cgroup2 cgroup2 rw\n\
            27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(cgroup2_mount(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount(unified), Some("/sys/fs/cgroup".into()));
        // A container's view (root not "/") is skipped; an escaped space is decoded.
        let nested = "40 30 0:26 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
            41 30 0:26 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(nested), Some("/mnt/cg two".into()));
        assert_eq!(cgroup2_mount("garbage\n\n- cgroup2"), None);
    }

    #[test]
    fn the_cache_keeps_its_cap() {
        let mut c = Capped::new(1000);
        for i in 0..50_000u64 {
            c.insert(i, format!("/slice-{i}"));
            assert!(c.len() <= 1000);
        }
        assert_eq!(c.len(), 1000);
        // The newest stay, the oldest went first.
        assert_eq!(c.get(&49_999).map(String::as_str), Some("/slice-49999"));
        assert!(c.get(&48_999).is_none());
        assert!(c.get(&49_000).is_some());
        // Re-inserting an existing key neither grows it nor duplicates its order entry.
        c.insert(49_999, "/x".into());
        assert_eq!(c.len(), 1000);
        assert_eq!(c.order.len(), 1000);
    }

    #[test]
    fn walks_a_directory_tree_by_inode() {
        let root = std::env::temp_dir().join(format!("rstmon-cg-walk-{}", std::process::id()));
        let deep = root.join("a.slice/b.service");
        fs::create_dir_all(&deep).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let wanted: HashSet<u64> = [ino(&deep), ino(&root), 1].into();
        let found = walk(&root, &wanted);
        assert_eq!(
            found.get(&ino(&deep)).map(String::as_str),
            Some("/a.slice/b.service")
        );
        assert_eq!(found.get(&ino(&root)).map(String::as_str), Some("/"));
        assert!(!found.contains_key(&1));
        fs::remove_dir_all(&root).unwrap();
    }
}
