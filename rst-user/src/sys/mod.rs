//! Raw system calls aya 0.14 does not expose, each behind a safe function.

pub mod bpf;
pub mod timerfd;
