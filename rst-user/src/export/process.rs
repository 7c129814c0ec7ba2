//! The `process_*` metrics every Prometheus client library exports about its own
//! process, under the same names and types: CPU time, memory, file descriptors,
//! threads, start time. Read from `/proc/self` at each scrape and written by the
//! exposition's own family builder, so no registry is involved.

use std::{fs, io};

use super::family::{FamilyBuilder, Kind};

/// What `/proc/self` says at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    /// Soft RLIMIT_AS (`u64::MAX` as a float when unlimited, as the Go client does).
    pub virtual_max_bytes: f64,
    pub open_fds: f64,
    /// Soft RLIMIT_NOFILE.
    pub max_fds: f64,
    pub threads: f64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
}

fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf has no memory preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as f64)
}

/// Soft limit `res`; unlimited as `u64::MAX`.
fn soft_limit(res: libc::__rlimit_resource_t) -> Option<f64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into memory we own.
    (unsafe { libc::getrlimit(res, &mut lim) } == 0).then_some(lim.rlim_cur as f64)
}

/// The fields of `/proc/PID/stat` after the command name, which may contain spaces
/// and parentheses: field 3 (`state`) is element 0.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// The boot time in seconds since the epoch (`btime` of `/proc/stat`), read once: it
/// does not change while the system runs.
fn boot_time() -> io::Result<f64> {
    static BTIME: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(b) = BTIME.get() {
        return Ok(*b);
    }
    let b = fs::read_to_string("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))?;
    Ok(*BTIME.get_or_init(|| b))
}

/// Open file descriptors of this process: the size `stat` gives `/proc/self/fd`
/// (Linux 6.2+, the count of open descriptors), else by listing it. Listing costs a
/// dentry per descriptor, milliseconds with the ~10 000 a daemon holds when it
/// monitors thousands of interfaces.
fn open_fds() -> io::Result<u64> {
    let dir = fs::File::open("/proc/self/fd")?;
    let size = dir.metadata()?.len();
    if size > 0 {
        return Ok(size);
    }
    Ok(fs::read_dir("/proc/self/fd")?.count() as u64)
}

impl ProcessStats {
    /// Reads this process's figures.
    pub fn read() -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat");
        let stat = fs::read_to_string("/proc/self/stat")?;
        let f = stat_fields(&stat).ok_or_else(bad)?;
        // Field N of proc(5) is f[N - 3].
        let field = |n: usize| -> io::Result<f64> {
            f.get(n - 3)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(bad)
        };
        let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100.0);
        let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096.0);
        let btime = boot_time()?;
        let open_fds = open_fds()? as f64;
        Ok(Self {
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            threads: field(20)?,
            start_time_seconds: btime + field(22)? / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            virtual_max_bytes: soft_limit(libc::RLIMIT_AS).unwrap_or(u64::MAX as f64),
            open_fds,
            max_fds: soft_limit(libc::RLIMIT_NOFILE).unwrap_or(0.0),
        })
    }

    /// The `process_*` families, sorted by name.
    pub fn render(&self, out: &mut String) {
        use Kind::{Counter, Gauge};
        let families: [(&'static str, &'static str, Kind, f64); 8] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Counter,
                self.cpu_seconds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                self.max_fds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                Gauge,
                self.open_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Gauge,
                self.resident_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Gauge,
                self.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                Gauge,
                self.threads,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Gauge,
                self.virtual_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                Gauge,
                self.virtual_max_bytes,
            ),
        ];
        for (name, help, kind, v) in families {
            let mut f = FamilyBuilder::new(name, help, kind, &[]);
            f.add(&[], v);
            f.write(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let f = stat_fields("42 (a) b (c)) S 1 2 3").unwrap();
        assert_eq!(f, ["S", "1", "2", "3"]);
    }

    /// The count from `stat` (this kernel has it) agrees with a listing; other test
    /// threads may open or close a few files meanwhile.
    #[test]
    fn open_fds_counted_without_listing() {
        let extra: Vec<fs::File> = (0..64)
            .map(|_| fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let by_stat = fs::metadata("/proc/self/fd").unwrap().len();
        let counted = open_fds().unwrap();
        let listed = fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        assert!(
            by_stat > 0,
            "stat of /proc/self/fd gives no count on this kernel"
        );
        assert!(
            counted >= 64 && counted.abs_diff(listed) <= 16,
            "{counted} vs {listed}"
        );
        drop(extra);
    }

    #[test]
    fn own_figures_are_plausible() {
        let p = ProcessStats::read().unwrap();
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let rss_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let ratio = p.resident_bytes / (rss_kib * 1024.0);
        assert!((0.5..2.0).contains(&ratio), "{p:?} vs VmRSS {rss_kib} kB");
        assert!(p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3.0 && p.open_fds <= p.max_fds, "{p:?}");
        assert!(p.threads >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0);
        let mut out = String::new();
        p.render(&mut out);
        assert_eq!(out.matches("# TYPE ").count(), 8);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\n"));
    }
}
