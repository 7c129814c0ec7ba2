//! The daemon's drain loop, run by the benchmarks on a thread of their own.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use anyhow::anyhow;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use rst_common::MAP_EVENTS;
use rst_testkit::{loader::take_map, process::pin_thread};
use rst_user::{drain, sources::Event};
use tokio::sync::watch;

use crate::CPU_CONSUMER;

/// The daemon's drain loop (`drain::run`) on its own thread, pinned to [`CPU_CONSUMER`],
/// counting wire samples. Stop it with [`Drainer::stop`].
pub struct Drainer {
    stop: watch::Sender<bool>,
    handle: thread::JoinHandle<io::Result<()>>,
    wire: Arc<AtomicU64>,
}

impl Drainer {
    pub fn start(events: RingBuf<MapData>) -> Self {
        let (stop, rx) = watch::channel(false);
        let wire = Arc::new(AtomicU64::new(0));
        let w = wire.clone();
        let handle = thread::spawn(move || {
            pin_thread(CPU_CONSUMER);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drain::run(events, rx, move |ev| {
                if let Ok(Event::Wire(_)) = ev {
                    w.fetch_add(1, Ordering::Relaxed);
                }
            }))
        });
        Self { stop, handle, wire }
    }

    /// Drains what is left and returns the number of wire samples received.
    pub fn stop(self) -> anyhow::Result<u64> {
        let _ = self.stop.send(true);
        self.handle
            .join()
            .map_err(|_| anyhow!("drain thread panicked"))??;
        Ok(self.wire.load(Ordering::Relaxed))
    }
}

/// The object's ring buffer, taken out of it for a [`Drainer`].
pub fn take_events(ebpf: &mut Ebpf) -> anyhow::Result<RingBuf<MapData>> {
    Ok(take_map(ebpf, MAP_EVENTS)?)
}
