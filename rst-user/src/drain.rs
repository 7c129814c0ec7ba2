//! Draining the ring buffer: on readiness (the kernel forces a wakeup only when enough
//! data is pending, wakeups being expensive) and on a short timer for the rest.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::watch,
};

use crate::events::{self, DecodeError, Event};

/// How often the ring buffer is drained when no wakeup came.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(200);

fn drain_all(rb: &mut RingBuf<MapData>, f: &mut impl FnMut(Result<Event, DecodeError>)) {
    while let Some(item) = rb.next() {
        f(events::decode(&item));
    }
}

/// Runs until `stop` turns true, calling `f` for every record; drains once more at the end.
pub async fn run(
    rb: RingBuf<MapData>,
    mut stop: watch::Receiver<bool>,
    mut f: impl FnMut(Result<Event, DecodeError>),
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as
    // long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(rb, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                drain_all(guard.get_inner_mut(), &mut f);
                guard.clear_ready();
            }
            _ = tick.tick() => drain_all(fd.get_mut(), &mut f),
            _ = stop.changed() => {
                drain_all(fd.get_mut(), &mut f);
                return Ok(());
            }
        }
    }
}
