//! The kernel programs' self-counters: one slot each in the per-CPU array
//! [`crate::maps::STATS`], and the metric series each one is exported as.

/// A self-counter of the kernel programs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    /// Wire samples lost because the ring buffer was full.
    WireRingFull = 0,
    /// Wire samples not taken because the token bucket was empty (the counter still counted).
    WireRateLimited = 1,
    /// Send/receive samples lost because the ring buffer was full.
    TraceRingFull = 2,
    /// Wire samples submitted to the ring buffer.
    WireSampled = 3,
    /// Trace samples submitted to the ring buffer.
    TraceSampled = 4,
    /// Counter-map updates that failed (map full).
    CounterMapFull = 5,
    /// Kernel reads (probe_read) that failed in the tracepoint programs.
    ReadErrors = 6,
    /// Per-workload counter updates that failed (`WORKLOAD_COUNTERS` full): the reset
    /// is still in the sent/received families, not in the workload family.
    WorkloadMapFull = 7,
    /// Send/receive samples not taken because the trace sampler's rate limit was reached
    /// (the counters still counted).
    TraceRateLimited = 8,
    /// Verdict records submitted to the ring buffer (one per accepted RST, and one per
    /// other verdict of a sampled RST): what joins a wire sample to its fate.
    VerdictSampled = 9,
}

/// Number of [`Stat`] slots: the size of the STATS map.
pub const STAT_COUNT: u32 = Stat::ALL.len() as u32;

impl Stat {
    /// Every stat, in slot order.
    pub const ALL: [Stat; 10] = [
        Stat::WireRingFull,
        Stat::WireRateLimited,
        Stat::TraceRingFull,
        Stat::WireSampled,
        Stat::TraceSampled,
        Stat::CounterMapFull,
        Stat::ReadErrors,
        Stat::WorkloadMapFull,
        Stat::TraceRateLimited,
        Stat::VerdictSampled,
    ];

    /// Slot in the STATS map.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The metric this stat is exported as, and its label pairs.
    pub const fn series(self) -> (&'static str, &'static [(&'static str, &'static str)]) {
        const DROPPED: &str = "rstmon_samples_dropped_total";
        const SUBMITTED: &str = "rstmon_samples_submitted_total";
        const ERRORS: &str = "rstmon_errors_total";
        match self {
            Stat::WireRingFull => (DROPPED, &[("source", "wire"), ("reason", "ring_full")]),
            Stat::WireRateLimited => (DROPPED, &[("source", "wire"), ("reason", "rate_limited")]),
            Stat::TraceRingFull => (DROPPED, &[("source", "trace"), ("reason", "ring_full")]),
            Stat::WireSampled => (SUBMITTED, &[("source", "wire")]),
            Stat::TraceSampled => (SUBMITTED, &[("source", "trace")]),
            Stat::CounterMapFull => (ERRORS, &[("kind", "counter_map_full")]),
            Stat::ReadErrors => (ERRORS, &[("kind", "kernel_read")]),
            Stat::WorkloadMapFull => (ERRORS, &[("kind", "workload_map_full")]),
            Stat::TraceRateLimited => (DROPPED, &[("source", "trace"), ("reason", "rate_limited")]),
            Stat::VerdictSampled => (SUBMITTED, &[("source", "verdict")]),
        }
    }
}

const _: () = {
    let mut i = 0;
    while i < Stat::ALL.len() {
        assert!(Stat::ALL[i] as usize == i, "Stat::ALL is in slot order");
        i += 1;
    }
};
