//! A periodic, non-blocking timerfd that can sit in the runtime's epoll set.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

/// A periodic, non-blocking timerfd.
pub struct Ticker(OwnedFd);

impl Ticker {
    pub fn new(period: Duration) -> io::Result<Self> {
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
    pub fn ack(&self) {
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
