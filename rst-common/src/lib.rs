//! Layouts shared by the eBPF programs (`rst-ebpf`) and the daemon (`rst-user`).
//!
//! Every struct that crosses the kernel/user boundary is `#[repr(C)]`, has explicit
//! padding, holds no `bool`, and carries a compile-time size assertion so that a change
//! on one side cannot silently disagree with the other.
#![no_std]

pub mod parse;

pub mod events;
pub mod keys;
pub mod maps;
pub mod offsets;
pub mod stats;
pub mod tcp;
pub mod verdict;

pub use events::*;
pub use keys::*;
pub use maps::*;
pub use offsets::*;
pub use stats::{STAT_COUNT, Stat};
pub use tcp::*;
pub use verdict::*;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), only integer fields, explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for WireKey {}
    // SAFETY: repr(C), only integer fields, no implicit padding.
    unsafe impl aya::Pod for SendKey {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for RecvKey {}
    // SAFETY: repr(C), two u64 fields.
    unsafe impl aya::Pod for SampleWindow {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for PendingKey {}
    // SAFETY: repr(C), two u64 fields.
    unsafe impl aya::Pod for PendingReset {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for WorkloadKey {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for ConnStart {}
    // SAFETY: repr(C), only integer fields, no padding.
    unsafe impl aya::Pod for ListenKey {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for ListenInfo {}
    // SAFETY: repr(C), only u16 fields, no padding.
    unsafe impl aya::Pod for TraceOffsets {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for CounterKey {}
    // SAFETY: repr(C), only integer fields, explicit padding.
    unsafe impl aya::Pod for VerdictOffsets {}
}
