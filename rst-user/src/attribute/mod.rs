//! From the ids a reset carries (cgroup v2 id, network namespace inode) to names: the
//! cgroup's path and a workload name ([`workload`]). Resolution runs on a thread of its
//! own with capped caches; callers never block on it unless they ask to wait
//! ([`Names::resolve`], with a timeout), and a miss only queues a request.
//!
//! Exact by construction: cgroup ids are never reused within a boot, so an id → path
//! entry stays true; an id not found in the hierarchy belongs to a cgroup that is gone
//! and keeps its id (`cgroup:<id>`).

pub mod cgroup;
pub mod netns;
pub mod workload;

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use cgroup::Capped;

/// cgroup ids whose path is cached, at most.
pub const CGROUP_CACHE_CAP: usize = 16_384;
/// Network namespaces whose workload is cached, at most.
pub const NETNS_CACHE_CAP: usize = 4_096;
/// Requests queued for the resolver, at most (more are asked again on their next miss).
pub const PENDING_CAP: usize = 65_536;
/// The kubelet's pod log directories (`<namespace>_<name>_<uid>`).
pub const POD_LOG_DIR: &str = "/var/log/pods";

/// What a reset's ids resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub workload: String,
    /// The cgroup v2 path, when the reset named a cgroup that still existed.
    pub cgroup: Option<String>,
}

/// Where the resolver looks.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The cgroup v2 mount (`None`: every cgroup is `cgroup:<id>`).
    pub cgroup_root: Option<PathBuf>,
    pub netns_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    /// Inode of the initial network namespace (`host`).
    pub initial_netns: Option<u32>,
    pub cgroup_cap: usize,
    pub netns_cap: usize,
}

impl Sources {
    /// This system's.
    pub fn system() -> Self {
        Self {
            cgroup_root: cgroup::find_mount(),
            netns_dir: netns::NETNS_DIR.into(),
            pod_log_dir: POD_LOG_DIR.into(),
            initial_netns: netns::initial(),
            cgroup_cap: CGROUP_CACHE_CAP,
            netns_cap: NETNS_CACHE_CAP,
        }
    }
}

struct State {
    /// id → path; `None` for a cgroup that was gone when looked for.
    cgroups: Capped<u64, Option<String>>,
    /// namespace inode → workload. The kernel reuses a namespace's inode number once
    /// the namespace is gone, so entries are checked: a named one against its file, the
    /// others expire after [`NETNS_TTL`].
    netns: Capped<u32, NsEntry>,
    pending_cg: HashSet<u64>,
    pending_ns: HashSet<u32>,
    stop: bool,
}

/// How long the workload of an unnamed namespace is trusted before it is looked up again.
pub const NETNS_TTL: Duration = Duration::from_secs(5);

struct NsEntry {
    workload: String,
    /// `/var/run/netns/<name>` of a named namespace: still this inode?
    check: Option<PathBuf>,
    at: Instant,
}

impl NsEntry {
    fn valid(&self, ns: u32) -> bool {
        match &self.check {
            Some(p) => netns::ns_inode(p) == Some(ns),
            None => self.workload == "host" || self.at.elapsed() < NETNS_TTL,
        }
    }
}

struct Inner {
    sources: Sources,
    state: Mutex<State>,
    /// Signalled when requests are queued.
    work: Condvar,
    /// Signalled when a batch was resolved.
    done: Condvar,
}

/// The resolver; clones share it. Its thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Names {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        lock(&self.0.state).stop = true;
        self.0.work.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Names {
    /// Starts the resolver thread.
    pub fn start(sources: Sources) -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                cgroups: Capped::new(sources.cgroup_cap),
                netns: Capped::new(sources.netns_cap),
                pending_cg: HashSet::new(),
                pending_ns: HashSet::new(),
                stop: false,
            }),
            sources,
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = inner.clone();
        std::thread::Builder::new()
            .name("rstmon-names".into())
            .spawn(move || worker.run())
            .expect("spawning the name resolver thread");
        Self {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// The owner of (cgroup id, netns inode) if already known; else queues it and
    /// returns `None`. Never blocks on resolution.
    pub fn lookup(&self, cgroup_id: u64, netns: u32) -> Option<Owner> {
        let mut st = lock(&self.inner.state);
        let got = self.inner.known(&st, cgroup_id, netns);
        if got.is_none() {
            request(&mut st, cgroup_id, netns);
            self.inner.work.notify_one();
        }
        got
    }

    /// The owner of each key, waiting up to `timeout` for the ones not known yet;
    /// `None` for those still unresolved then (see [`Names::fallback`]).
    pub fn resolve(
        &self,
        keys: &[(u64, u32)],
        timeout: Duration,
    ) -> HashMap<(u64, u32), Option<Owner>> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        let mut queued = false;
        for &(cg, ns) in keys {
            if self.inner.known(&st, cg, ns).is_none() {
                request(&mut st, cg, ns);
                queued = true;
            }
        }
        if queued {
            self.inner.work.notify_one();
        }
        loop {
            let missing = keys
                .iter()
                .any(|&(cg, ns)| self.inner.known(&st, cg, ns).is_none());
            let now = Instant::now();
            if !missing || now >= deadline {
                break;
            }
            st = self
                .inner
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        keys.iter()
            .map(|&(cg, ns)| ((cg, ns), self.inner.known(&st, cg, ns)))
            .collect()
    }

    /// [`Names::resolve`] with unresolved keys named by their ids (`cgroup:<id>`,
    /// `netns:<inode>`).
    pub fn resolve_or_ids(
        &self,
        keys: &[(u64, u32)],
        timeout: Duration,
    ) -> HashMap<(u64, u32), Owner> {
        self.resolve(keys, timeout)
            .into_iter()
            .map(|(k, o)| (k, o.unwrap_or_else(|| Self::fallback(k.0, k.1))))
            .collect()
    }

    /// The owner of ids that could not be resolved (yet).
    pub fn fallback(cgroup_id: u64, netns: u32) -> Owner {
        Owner {
            workload: fallback(cgroup_id, netns),
            cgroup: None,
        }
    }

    /// Entries in the caches (cgroups, namespaces).
    pub fn cached(&self) -> (usize, usize) {
        let st = lock(&self.inner.state);
        (st.cgroups.len(), st.netns.len())
    }
}

fn request(st: &mut State, cg: u64, ns: u32) {
    if cg != 0 {
        if st.pending_cg.len() < PENDING_CAP {
            st.pending_cg.insert(cg);
        }
    } else if st.pending_ns.len() < PENDING_CAP {
        st.pending_ns.insert(ns);
    }
}

/// The name of ids that could not be resolved.
fn fallback(cg: u64, ns: u32) -> String {
    match (cg, ns) {
        (0, 0) => "unknown".into(),
        (0, ns) => format!("netns:{ns}"),
        (cg, _) => format!("cgroup:{cg}"),
    }
}

impl Inner {
    fn known(&self, st: &State, cg: u64, ns: u32) -> Option<Owner> {
        if cg != 0 {
            return st.cgroups.get(&cg).map(|p| match p {
                Some(path) => Owner {
                    workload: self.workload_of(path),
                    cgroup: Some(path.clone()),
                },
                None => Owner {
                    workload: fallback(cg, ns),
                    cgroup: None,
                },
            });
        }
        if ns == 0 {
            return Some(Owner {
                workload: fallback(0, 0),
                cgroup: None,
            });
        }
        st.netns.get(&ns).filter(|e| e.valid(ns)).map(|e| Owner {
            workload: e.workload.clone(),
            cgroup: None,
        })
    }

    fn workload_of(&self, path: &str) -> String {
        workload::from_cgroup(path, |uid| {
            let dirs = fs::read_dir(&self.sources.pod_log_dir).ok()?;
            let names: Vec<String> = dirs
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            workload::pod_from_log_dirs(uid, names.iter().map(String::as_str))
        })
    }

    fn run(self: Arc<Self>) {
        loop {
            let (cgs, nss) = {
                let mut st = lock(&self.state);
                while !st.stop && st.pending_cg.is_empty() && st.pending_ns.is_empty() {
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stop {
                    return;
                }
                (
                    std::mem::take(&mut st.pending_cg),
                    std::mem::take(&mut st.pending_ns),
                )
            };
            // The file system is read without the lock held.
            let paths = match &self.sources.cgroup_root {
                Some(root) if !cgs.is_empty() => cgroup::walk(root, &cgs),
                _ => HashMap::new(),
            };
            let (names, owners) = if nss.is_empty() {
                (HashMap::new(), HashMap::new())
            } else {
                let names = netns::named(&self.sources.netns_dir);
                let unnamed: HashSet<u32> = nss
                    .iter()
                    .copied()
                    .filter(|n| !names.contains_key(n) && Some(*n) != self.sources.initial_netns)
                    .collect();
                (names, netns::owner_cgroups(&unnamed))
            };
            let ns_workloads: Vec<(u32, NsEntry)> = nss
                .iter()
                .map(|&ns| {
                    let mut check = None;
                    let workload = if Some(ns) == self.sources.initial_netns {
                        "host".to_string()
                    } else if let Some(n) = names.get(&ns) {
                        check = Some(self.sources.netns_dir.join(n));
                        format!("netns:{n}")
                    } else if let Some(path) = owners.get(&ns) {
                        self.workload_of(path)
                    } else {
                        format!("netns:{ns}")
                    };
                    let e = NsEntry {
                        workload,
                        check,
                        at: Instant::now(),
                    };
                    (ns, e)
                })
                .collect();
            let mut st = lock(&self.state);
            for cg in cgs {
                st.cgroups.insert(cg, paths.get(&cg).cloned());
            }
            for (ns, e) in ns_workloads {
                st.netns.insert(ns, e);
            }
            drop(st);
            self.done.notify_all();
        }
    }
}

/// `--max-workloads`: the first `max` distinct workloads keep their name in the
/// metrics, for the daemon's lifetime; later ones are counted as `other`.
pub struct Admission {
    max: usize,
    state: std::sync::Mutex<(HashSet<String>, HashSet<String>)>,
}

/// The `workload` label of everything beyond `--max-workloads`.
pub const OTHER: &str = "other";
/// Folded workloads remembered (each is counted once), at most.
pub const FOLDED_CAP: usize = 65_536;

impl Admission {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            state: Default::default(),
        }
    }

    /// The label `workload` is exported under.
    pub fn label(&self, workload: &str) -> String {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (admitted, folded) = &mut *st;
        if admitted.contains(workload) {
            return workload.to_string();
        }
        if admitted.len() < self.max && !folded.contains(workload) {
            admitted.insert(workload.to_string());
            return workload.to_string();
        }
        if folded.len() < FOLDED_CAP {
            folded.insert(workload.to_string());
        }
        OTHER.into()
    }

    /// The admitted workloads.
    pub fn admitted(&self) -> Vec<String> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.iter().cloned().collect()
    }

    /// Distinct workloads folded into `other`.
    pub fn overflow(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn sources(root: PathBuf, cap: usize) -> Sources {
        Sources {
            cgroup_root: Some(root.clone()),
            netns_dir: root.join("no-netns"),
            pod_log_dir: root.join("no-pods"),
            initial_netns: Some(4026531840),
            cgroup_cap: cap,
            netns_cap: cap,
        }
    }

    #[test]
    fn resolves_caps_and_keeps_vanished_ids() {
        let root = std::env::temp_dir().join(format!("rstmon-names-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let mut ids = Vec::new();
        for i in 0..3000 {
            let d = root.join(format!("t.slice/w{i}.service"));
            fs::create_dir_all(&d).unwrap();
            ids.push(fs::metadata(&d).unwrap().ino());
        }
        let names = Names::start(sources(root.clone(), 1000));
        // A miss queues and does not wait.
        assert_eq!(names.lookup(ids[0], 0), None);
        for (chunk, ids) in ids.chunks(500).enumerate() {
            let keys: Vec<(u64, u32)> = ids.iter().map(|&i| (i, 0)).collect();
            let got = names.resolve_or_ids(&keys, Duration::from_secs(30));
            for (k, id) in ids.iter().enumerate() {
                let i = chunk * 500 + k;
                assert_eq!(got[&(*id, 0)].workload, format!("w{i}.service"));
                assert_eq!(
                    got[&(*id, 0)].cgroup.as_deref(),
                    Some(format!("/t.slice/w{i}.service").as_str())
                );
            }
        }
        // Thousands of cgroups, a cache of 1000.
        assert!(names.cached().0 <= 1000, "{:?}", names.cached());
        // A cgroup id that is not in the hierarchy (gone) keeps its id.
        let gone = names.resolve_or_ids(&[(u64::MAX - 1, 0)], Duration::from_secs(10));
        assert_eq!(
            gone[&(u64::MAX - 1, 0)].workload,
            format!("cgroup:{}", u64::MAX - 1)
        );
        assert_eq!(gone[&(u64::MAX - 1, 0)].cgroup, None);
        // Without a socket: the initial namespace is the host; an unknown one keeps
        // its inode; none at all is unknown.
        let ns = names.resolve_or_ids(&[(0, 4026531840), (0, 7), (0, 0)], Duration::from_secs(10));
        assert_eq!(ns[&(0, 4026531840)].workload, "host");
        assert_eq!(ns[&(0, 7)].workload, "netns:7");
        assert_eq!(ns[&(0, 0)].workload, "unknown");
        // Thousands of namespaces, a cache of 1000.
        for chunk in 0..6u32 {
            let many: Vec<(u64, u32)> = (0..500).map(|n| (0, 100 + chunk * 500 + n)).collect();
            let got = names.resolve_or_ids(&many, Duration::from_secs(60));
            assert!(
                got.iter()
                    .all(|((_, n), o)| o.workload == format!("netns:{n}"))
            );
        }
        assert!(names.cached().1 <= 1000, "{:?}", names.cached());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn admission_folds_beyond_the_maximum() {
        let a = Admission::new(2);
        let got: Vec<String> = ["a", "b", "c", "a", "d", "e", "c"]
            .iter()
            .map(|w| a.label(w))
            .collect();
        assert_eq!(got, ["a", "b", "other", "a", "other", "other", "other"]);
        assert_eq!(a.overflow(), 3);
        let mut adm = a.admitted();
        adm.sort();
        assert_eq!(adm, ["a", "b"]);
    }
}
