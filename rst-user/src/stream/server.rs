//! The daemon's side of the stream: a Unix socket only the daemon's user (and root) can
//! use, one bounded queue per watcher, and the drops of a slow watcher counted and told
//! to it. Publishing never waits: the drain of the ring buffer (and so the daemon's
//! counting and /metrics) goes on at full speed whatever a watcher does.

use std::{
    fs::{self, DirBuilder, Permissions},
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{Notify, mpsc, watch},
};
use tracing::{debug, info, warn};

use super::{Control, Hello, PROTOCOL, Request, filter::Filter};
use crate::export::family::{FamilyBuilder, Kind};

/// Samples queued for one watcher; more while it does not read are dropped (for it).
pub const QUEUE: usize = 4096;
/// Watchers at once; one more is told so and closed.
pub const MAX_WATCHERS: usize = 64;
/// A watcher must send its request line within this long of connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// Bytes written to a watcher in one go, at most (a queued batch).
const BATCH_BYTES: usize = 64 * 1024;

/// The stream's self-metrics.
#[derive(Debug, Default)]
pub struct Stats {
    clients: AtomicU64,
    dropped: AtomicU64,
}

impl Stats {
    /// `rstmon_watch_clients` and `rstmon_watch_dropped_total`, in the text format.
    pub fn render(&self) -> String {
        let mut clients = FamilyBuilder::new(
            "rstmon_watch_clients",
            "Watchers reading the daemon's sample stream now.",
            Kind::Gauge,
            &[],
        );
        clients.add(&[], self.clients.load(Ordering::Relaxed));
        let mut dropped = FamilyBuilder::new(
            "rstmon_watch_dropped_total",
            "Samples not sent to a watcher because its queue was full (a watcher reading too slowly); the watcher is told, the daemon's counters are unaffected.",
            Kind::Counter,
            &[],
        );
        dropped.add(&[], self.dropped.load(Ordering::Relaxed));
        let mut out = String::new();
        clients.write(&mut out);
        dropped.write(&mut out);
        out
    }
}

struct Client {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<Arc<str>>,
    /// Drops not yet told to the watcher.
    pending: Arc<AtomicU64>,
    notify: Arc<Notify>,
}

/// What a registered watcher's task reads from.
struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Arc<str>>,
    pending: Arc<AtomicU64>,
    notify: Arc<Notify>,
}

/// The watchers, and what the drain publishes to them.
#[derive(Default)]
pub struct Hub {
    clients: Mutex<Vec<Client>>,
    count: AtomicUsize,
    next_id: AtomicU64,
    pub stats: Arc<Stats>,
}

impl Hub {
    /// Whether anyone watches (when not, the drain does not even present samples).
    pub fn has_clients(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Offers one sample to every watcher whose filter it passes. Never waits: a watcher
    /// whose queue is full loses this sample, and the loss is counted for it.
    pub fn publish(&self, v: &Value) {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut line: Option<Arc<str>> = None;
        for c in clients.iter().filter(|c| c.filter.matches(v)) {
            let l = line.get_or_insert_with(|| Arc::from(v.to_string())).clone();
            if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(l) {
                c.pending.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                c.notify.notify_one();
            }
        }
    }

    fn register(&self, filter: Filter) -> Option<Subscription> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= MAX_WATCHERS {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pending = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        clients.push(Client {
            id,
            filter,
            tx,
            pending: pending.clone(),
            notify: notify.clone(),
        });
        self.count.store(clients.len(), Ordering::Relaxed);
        self.stats
            .clients
            .store(clients.len() as u64, Ordering::Relaxed);
        Some(Subscription {
            id,
            rx,
            pending,
            notify,
        })
    }

    fn unregister(&self, id: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain(|c| c.id != id);
        self.count.store(clients.len(), Ordering::Relaxed);
        self.stats
            .clients
            .store(clients.len() as u64, Ordering::Relaxed);
    }
}

/// Why the stream's socket could not be set up (the daemon runs on without it).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create {0}: {1}")]
    CreateDir(PathBuf, io::Error),
    #[error("{dir} belongs to uid {owner}, not to this user (uid {own})")]
    Owner { dir: PathBuf, owner: u32, own: u32 },
    #[error("{0} is writable by other users (mode {1:o}); it must be the daemon's own (e.g. 0700)")]
    DirMode(PathBuf, u32),
    #[error("{0} is not a directory")]
    NotDir(PathBuf),
    #[error("another rstmon already serves {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket")]
    NotSocket(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// The bound socket; dropping it removes the socket file (if it is still this one) and
/// the directories [`bind`] created for it (if empty).
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file this listener created.
    file: (u64, u64),
    /// Directories created for the socket, deepest first.
    created: Vec<PathBuf>,
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(m) = fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.file
        {
            let _ = fs::remove_file(&self.path);
        }
        for dir in &self.created {
            if fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a peer of this uid may watch: the daemon's own user, or root.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == own_uid
}

/// Binds the stream's socket at `path`, mode 0600, in a directory of the daemon's own:
/// created 0700 when missing; an existing one must belong to this user and not be
/// writable by others. A stale socket (nothing accepts) is replaced; a live one is
/// another daemon's and is left alone.
pub fn bind(path: &Path) -> Result<Listener, BindError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| BindError::CreateDir(dir.clone(), e))?;
    }
    let m = fs::symlink_metadata(&dir).map_err(|e| BindError::Io(dir.clone(), e))?;
    if !m.is_dir() {
        return Err(BindError::NotDir(dir));
    }
    let own = euid();
    if m.uid() != own {
        return Err(BindError::Owner {
            dir,
            owner: m.uid(),
            own,
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(BindError::DirMode(dir, m.mode() & 0o7777));
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(path = %path.display(), "removing a stale watch socket");
                fs::remove_file(path).map_err(|e| BindError::Io(path.to_path_buf(), e))?;
            }
            Err(e) => return Err(BindError::Io(path.to_path_buf(), e)),
        },
        Ok(_) => return Err(BindError::NotSocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Io(path.to_path_buf(), e)),
    }
    let io_err = |e| BindError::Io(path.to_path_buf(), e);
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(io_err)?;
    let m = fs::symlink_metadata(path).map_err(io_err)?;
    std_listener.set_nonblocking(true).map_err(io_err)?;
    let listener = UnixListener::from_std(std_listener).map_err(io_err)?;
    Ok(Listener {
        listener,
        path: path.to_path_buf(),
        file: (m.dev(), m.ino()),
        created,
    })
}

/// Accepts watchers until `stop` turns true, then removes the socket.
pub async fn serve(listener: Listener, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    info!(path = %listener.path().display(), "serving the watch stream");
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.listener.accept() => match r {
                Ok((s, _)) => {
                    tokio::spawn(handle(s, hub.clone(), stop.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: back off instead of spinning.
                    warn!("watch stream: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn send(w: &mut OwnedWriteHalf, c: &Control) -> io::Result<()> {
    let mut line = c.line();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// Reads the watcher's request, checks its uid and returns its filter, or why not. The
/// request is read first even from a peer that will be refused, so that nothing unread
/// is left when the daemon closes (which would turn its answer into ECONNRESET).
async fn admit(peer_uid: Option<u32>, rd: &mut BufReader<OwnedReadHalf>) -> Result<Filter, String> {
    let mut line = String::new();
    let read =
        tokio::time::timeout(REQUEST_TIMEOUT, rd.take(MAX_REQUEST).read_line(&mut line)).await;
    let peer = peer_uid.ok_or("cannot read the peer's credentials (SO_PEERCRED)")?;
    let own = euid();
    if !peer_allowed(peer, own) {
        return Err(format!(
            "uid {peer} may not watch: only root and the daemon's user (uid {own})"
        ));
    }
    match read {
        Err(_) => return Err(format!("no request within {REQUEST_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => {
            return Err("the request is not one line of at most 64 KiB".into());
        }
        Ok(Ok(_)) => {}
    }
    let req: Request = serde_json::from_str(&line).map_err(|e| format!("bad request line: {e}"))?;
    if req.watch != PROTOCOL {
        return Err(format!(
            "protocol {} is not spoken here (this daemon speaks {PROTOCOL})",
            req.watch
        ));
    }
    Filter::new(&req.filter).map_err(|e| e.to_string())
}

/// One watcher: admission, then its queue written out until it goes or the daemon stops.
async fn handle(s: UnixStream, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let peer = s.peer_cred().ok();
    let (uid, pid) = (peer.map(|p| p.uid()), peer.and_then(|p| p.pid()));
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd);
    let admitted = admit(uid, &mut rd).await.and_then(|f| {
        hub.register(f)
            .ok_or_else(|| format!("too many watchers (at most {MAX_WATCHERS})"))
    });
    let mut sub = match admitted {
        Ok(sub) => sub,
        Err(why) => {
            warn!(uid, pid, "watcher refused: {why}");
            let _ = send(&mut wr, &Control::Error(why)).await;
            return;
        }
    };
    debug!(uid, pid, "watcher connected");
    let hello = Control::Hello(Hello {
        rstmon: env!("CARGO_PKG_VERSION").to_string(),
        protocol: PROTOCOL,
    });
    if send(&mut wr, &hello).await.is_ok() {
        let _ = pump(&mut rd, &mut wr, &mut sub, &mut stop).await;
    }
    hub.unregister(sub.id);
    debug!(uid, pid, "watcher gone");
}

/// Writes the watcher's queue (in batches) and its drop notices.
async fn pump(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    sub: &mut Subscription,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = String::with_capacity(BATCH_BYTES);
    let mut scratch = [0u8; 256];
    loop {
        buf.clear();
        tokio::select! {
            _ = stop.changed() => {
                let _ = send(wr, &Control::Error("the daemon is stopping".into())).await;
                return Ok(());
            }
            // The watcher sends nothing after its request: readable means it went away.
            n = rd.read(&mut scratch) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            line = sub.rx.recv() => {
                let Some(line) = line else { return Ok(()) };
                buf.push_str(&line);
                buf.push('\n');
                while buf.len() < BATCH_BYTES {
                    let Ok(line) = sub.rx.try_recv() else { break };
                    buf.push_str(&line);
                    buf.push('\n');
                }
            }
            _ = sub.notify.notified() => {}
        }
        let dropped = sub.pending.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            buf.push_str(&Control::Dropped(dropped).line());
            buf.push('\n');
        }
        if !buf.is_empty() {
            wr.write_all(buf.as_bytes()).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::filter::FilterSpec;
    use serde_json::json;

    #[test]
    fn only_root_and_the_daemons_user_may_watch() {
        assert!(peer_allowed(0, 0));
        assert!(peer_allowed(0, 65534));
        assert!(peer_allowed(65534, 65534));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(1000, 65534));
    }

    #[test]
    fn a_full_queue_drops_for_that_watcher_only() {
        let hub = Hub::default();
        assert!(!hub.has_clients());
        let mut slow = hub.register(Filter::default()).unwrap();
        let mut fast = hub
            .register(
                Filter::new(&FilterSpec {
                    side: vec!["sent".into()],
                    ..Default::default()
                })
                .unwrap(),
            )
            .unwrap();
        assert!(hub.has_clients());
        let sent = json!({"direction": "sent", "cause": "no_listener"});
        let wire = json!({"direction": "wire", "cause": null});
        for _ in 0..QUEUE + 10 {
            hub.publish(&sent);
            hub.publish(&wire);
            // The fast one reads everything it gets.
            while fast.rx.try_recv().is_ok() {}
        }
        assert_eq!(slow.pending.load(Ordering::Relaxed), QUEUE as u64 + 20);
        assert_eq!(fast.pending.load(Ordering::Relaxed), 0);
        assert_eq!(hub.stats.dropped.load(Ordering::Relaxed), QUEUE as u64 + 20);
        let first = slow.rx.try_recv().unwrap();
        assert_eq!(&*first, sent.to_string());
        let text = hub.stats.render();
        assert!(text.contains("rstmon_watch_clients 2\n"), "{text}");
        assert!(
            text.contains(&format!("rstmon_watch_dropped_total {}\n", QUEUE + 20)),
            "{text}"
        );
        hub.unregister(slow.id);
        hub.unregister(fast.id);
        assert!(!hub.has_clients());
        assert!(hub.stats.render().contains("rstmon_watch_clients 0\n"));
    }

    #[test]
    fn bind_makes_an_owner_only_socket_and_replaces_a_stale_one() {
        let dir = std::env::temp_dir().join(format!("rstmon-bind-{}", std::process::id()));
        let path = dir.join("sub/watch.sock");
        let l = bind_in_runtime(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir.join("sub")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(matches!(bind_in_runtime(&path), Err(BindError::InUse(_))));
        drop(l);
        assert!(!path.exists(), "socket removed on drop");
        assert!(
            !dir.exists(),
            "the directories bind created removed on drop"
        );
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::set_permissions(dir.join("sub"), Permissions::from_mode(0o700)).unwrap();
        // A socket nothing accepts on (a daemon killed by SIGKILL leaves one).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = bind_in_runtime(&path).expect("stale socket replaced");
        drop(l);
        assert!(!path.exists(), "socket removed on drop");
        assert!(
            dir.join("sub").exists(),
            "a directory bind did not create stays"
        );
        fs::write(&path, "x").unwrap();
        assert!(matches!(
            bind_in_runtime(&path),
            Err(BindError::NotSocket(_))
        ));
        fs::set_permissions(dir.join("sub"), Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            bind_in_runtime(&path),
            Err(BindError::DirMode(..))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    fn bind_in_runtime(path: &Path) -> Result<Listener, BindError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        bind(path)
    }
}
