//! Draining the ring buffer: on readiness (the kernel forces a wakeup once per
//! `WAKEUP_BYTES` of samples, wakeups being expensive) and on a short timer for the rest.
//!
//! The timer is a timerfd in the runtime's epoll set rather than a tokio timer: a tokio
//! timer more than 64 ms away sits on the second level of tokio's timer wheel, and the
//! runtime wakes once to move it down a level and once more when it fires — twice per
//! period, which doubled the idle daemon's wakeups.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

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

/// A periodic, non-blocking timerfd.
struct Ticker(OwnedFd);

impl Ticker {
    fn new(period: Duration) -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and then owned.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: valid fd and pointers.
        if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Consumes the expirations so far (none pending is fine).
    fn ack(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a u64 we own; a non-blocking fd.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut n).cast(), size_of::<u64>()) };
    }
}

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
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
    mut stop: watch::Receiver<bool>,
    mut f: impl FnMut(Result<Event, DecodeError>),
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
                drain_all(guard.get_inner_mut(), &mut f);
                guard.clear_ready();
            }
            guard = tick.readable() => {
                let mut guard = guard?;
                guard.get_inner().ack();
                guard.clear_ready();
                drain_all(fd.get_mut(), &mut f);
            }
            _ = stop.changed() => {
                drain_all(fd.get_mut(), &mut f);
                return Ok(());
            }
        }
    }
}
