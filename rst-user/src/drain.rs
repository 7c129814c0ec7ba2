//! Draining the ring buffer: on readiness (the kernel forces a wakeup once per
//! `WAKEUP_BYTES` of samples, wakeups being expensive) and on a short timer for the rest.
//!
//! The timer is a timerfd in the runtime's epoll set rather than a tokio timer: a tokio
//! timer more than 64 ms away sits on the second level of tokio's timer wheel, and the
//! runtime wakes once to move it down a level and once more when it fires — twice per
//! period, which doubled the idle daemon's wakeups.

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};

use crate::{
    present::join::monotonic_ns,
    sources::{self, DecodeError, Event},
    sys::timerfd::Ticker,
};

/// How often the ring buffer is drained when no wakeup came.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

/// Records handled in one go before the other tasks of the runtime (the watch stream's
/// writers, the HTTP server) get to run: a burst of samples fills no watcher's queue
/// just because its writer could not run while the burst was read.
const BATCH: usize = 1024;

fn drain_all(rb: &mut RingBuf<MapData>, f: &mut impl FnMut(Drained)) {
    while let Some(item) = rb.next() {
        f(Drained::Record(sources::decode(&item)));
    }
}

/// Drains at most [`BATCH`] records; whether more may be waiting.
fn drain_batch(rb: &mut RingBuf<MapData>, f: &mut impl FnMut(Drained)) -> bool {
    for _ in 0..BATCH {
        let Some(item) = rb.next() else {
            return false;
        };
        f(Drained::Record(sources::decode(&item)));
    }
    true
}

/// Drains everything, [`BATCH`] records at a time, letting other tasks run in between.
async fn drain_yielding(rb: &mut RingBuf<MapData>, f: &mut impl FnMut(Drained)) {
    while drain_batch(rb, f) {
        tokio::task::yield_now().await;
    }
}

/// Gives the heap that start-up freed back to the system: parsing the kernel's BTF
/// peaks at tens of MiB, which glibc would otherwise keep in the daemon's RSS for good.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs until `stop` turns true, calling `f` for every record; drains once more at the end.
pub async fn run(
    rb: RingBuf<MapData>,
    stop: watch::Receiver<bool>,
    mut f: impl FnMut(Result<Event, DecodeError>),
) -> io::Result<()> {
    run_with_passes(rb, stop, move |d| {
        if let Drained::Record(r) = d {
            f(r)
        }
    })
    .await
}

/// What [`run_with_passes`] hands over.
pub enum Drained {
    Record(Result<Event, DecodeError>),
    /// A drain of the ring buffer that began at this CLOCK_MONOTONIC time (ns) ended:
    /// every record committed before it was handed over.
    Pass(u64),
}

/// [`run`], also telling each completed drain of the ring buffer (for the verdict
/// join, which knows from it that a verdict record can no longer come).
pub async fn run_with_passes(
    rb: RingBuf<MapData>,
    mut stop: watch::Receiver<bool>,
    mut f: impl FnMut(Drained),
) -> io::Result<()> {
    release_startup_memory();
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as
    // long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(rb, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    // SAFETY: the Ticker owns its timerfd for as long as the AsyncFd owns the Ticker.
    let tick = unsafe {
        AsyncFd::register_with_interest(Ticker::new(DRAIN_INTERVAL)?, Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain_yielding(guard.get_inner_mut(), &mut f).await;
                guard.clear_ready();
            }
            guard = tick.readable() => {
                let mut guard = guard?;
                guard.get_inner().ack();
                guard.clear_ready();
                let at = monotonic_ns();
                drain_yielding(fd.get_mut(), &mut f).await;
                f(Drained::Pass(at));
            }
            _ = stop.changed() => {
                let at = monotonic_ns();
                drain_all(fd.get_mut(), &mut f);
                f(Drained::Pass(at));
                return Ok(());
            }
        }
    }
}

/// Forwards the kernel programs' aya-log records to the `log` crate (and so to
/// tracing, target `rstmon::ebpf`) until `stop` turns true.
pub async fn forward_kernel_log(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    // SAFETY: the logger owns its ring-buffer fd for as long as the AsyncFd owns it.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = stop.changed() => {
                fd.get_mut().flush();
                return Ok(());
            }
        }
    }
}
