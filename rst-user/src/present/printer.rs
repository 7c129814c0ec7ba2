//! The `watch` output: samples are handed over by the drain loop without blocking and
//! printed on a thread of their own, which may wait (briefly) for the names of a
//! cgroup or namespace seen for the first time, so that the drain loop never does.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::warn;

use super::line::line;
use crate::{
    attach::controller::SharedInterfaces,
    attribute::Names,
    sources::Event,
    stream::{Encoder, filter::Filter},
};

/// Samples waiting to be printed, at most; more are dropped (and counted).
pub const QUEUE: usize = 16_384;
/// How long a sample waits for the names of ids seen for the first time.
pub const NAME_WAIT: Duration = Duration::from_millis(300);

/// What the drain loop hands the printer.
enum Item {
    Event(Event),
    /// A drain of the ring buffer that began at this CLOCK_MONOTONIC time ended.
    Pass(u64),
}

/// The printing thread.
pub struct Printer {
    tx: Option<SyncSender<Item>>,
    thread: Option<JoinHandle<()>>,
    /// Samples dropped because the queue was full.
    pub dropped: Arc<AtomicU64>,
}

impl Printer {
    pub fn spawn(
        json: bool,
        reasons: BTreeMap<u32, String>,
        interfaces: SharedInterfaces,
        names: Names,
        filter: Filter,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("rstmon-print".into())
            .spawn(move || {
                let mut encoder = Encoder::new(reasons, interfaces, Some(names.clone()));
                let print = |v: &serde_json::Value| {
                    if !filter.matches(v) {
                        return;
                    }
                    let line = if json { v.to_string() } else { line(v) };
                    let mut out = io::stdout().lock();
                    // A closed pipe (e.g. `| head`) ends output quietly.
                    let _ = writeln!(out, "{line}");
                };
                for item in rx {
                    let values = match item {
                        Item::Pass(at) => encoder.drained(at),
                        Item::Event(ev) => {
                            let attr = match &ev {
                                Event::Send(s) => Some(s.attr),
                                Event::Recv(r) => Some(r.attr),
                                Event::Wire(_) | Event::Verdict(_) => None,
                            };
                            if let Some(a) = attr {
                                names.resolve(&[(a.cgroup_id, a.netns)], NAME_WAIT);
                            }
                            encoder.encode(&ev)
                        }
                    };
                    values.iter().for_each(print);
                }
            })
            .expect("spawning the printer thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
            dropped: Arc::default(),
        }
    }

    /// Queues a sample; never blocks (a full queue drops it, counted).
    pub fn offer(&self, ev: Event) {
        self.send(Item::Event(ev));
    }

    /// Tells the end of a drain of the ring buffer that began at `at` (CLOCK_MONOTONIC).
    pub fn drained(&self, at: u64) {
        self.send(Item::Pass(at));
    }

    fn send(&self, item: Item) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(item)
            && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!("printing falls behind: samples dropped");
        }
    }

    /// Prints what is queued and ends the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
