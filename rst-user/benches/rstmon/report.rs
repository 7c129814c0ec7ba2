//! The report: its rows, the Markdown table, and the run's environment line.

use std::{fmt::Write as _, fs};

use rst_user::attach::possible_cpus;

pub struct Row {
    pub id: &'static str,
    pub measure: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// None: informational row.
    pub pass: Option<bool>,
}

impl Row {
    fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "pass",
            Some(false) => "**miss**",
            None => "info",
        }
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| id | measure | value: median (min–max, n) | baseline in the same run | ratio | target | result |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.measure,
            r.value,
            r.baseline,
            r.ratio,
            r.target,
            r.verdict()
        );
    }
    s
}

pub fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("{model} ({} CPUs)", possible_cpus())
}

/// Today as YYYY-MM-DD (UTC), without a date crate.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// CPU time of the whole host and of this process (with its reaped children), to tell
/// how busy other jobs kept the machine during a run.
pub struct HostLoad {
    at: std::time::Instant,
    busy: f64,
    own: f64,
}

impl HostLoad {
    pub fn now() -> Self {
        Self {
            at: std::time::Instant::now(),
            busy: host_busy_secs(),
            own: own_cpu_secs(),
        }
    }

    /// The share of the machine's CPUs (0–1) that others kept busy since [`HostLoad::now`].
    pub fn others_since(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64() * f64::from(possible_cpus());
        let others = (host_busy_secs() - self.busy) - (own_cpu_secs() - self.own);
        (others / wall.max(1e-9)).clamp(0.0, 1.0)
    }
}

/// Busy seconds of all CPUs (everything but idle and iowait) from /proc/stat.
fn host_busy_secs() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(l) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = l
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    busy as f64 / hz
}

/// User + system time of this process and its reaped children, seconds.
fn own_cpu_secs() -> f64 {
    let secs = |who| {
        // SAFETY: all-zero is a valid rusage, and getrusage writes one into it.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out pointer.
        unsafe { libc::getrusage(who, &mut r) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(r.ru_utime) + tv(r.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}
