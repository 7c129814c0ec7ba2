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
