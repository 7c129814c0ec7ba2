//! systemd-analyze, as the unit and package tests use it: the security score, verify in
//! a scratch root, and reading directives out of a unit file.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use rst_testkit::{run_to_exit, tool};

/// systemd-analyze: $RSTMON_SYSTEMD_ANALYZE, else from PATH (Debian's `systemd`).
pub fn analyze() -> PathBuf {
    tool("RSTMON_SYSTEMD_ANALYZE", "systemd-analyze")
}

/// Every value of `key=` in a unit file (any section), in order.
pub fn directives(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}
/// The overall exposure `systemd-analyze security --offline=yes` gives `unit`, and its
/// verdict word, with the whole report.
pub fn security_score(unit: &Path) -> (f64, String, String) {
    let mut cmd = Command::new(analyze());
    cmd.args(["security", "--offline=yes", "--no-pager"])
        .arg(unit);
    let out = run_to_exit(cmd, "systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure line:\n{text}"));
    let mut words = line
        .rsplit_once(':')
        .expect("exposure: score")
        .1
        .split_whitespace();
    let score: f64 = words.next().and_then(|s| s.parse().ok()).expect("score");
    let verdict = words.next().unwrap_or_default().to_string();
    (score, verdict, text)
}

/// The host's *.target and *.slice units (the unit's After=/WantedBy= name them).
pub fn copy_host_targets(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).expect("mkdir");
    for dir in ["/usr/lib/systemd/system", "/lib/systemd/system"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.ends_with(".target") || name.ends_with(".slice")) && p.is_file() {
                let _ = fs::copy(&p, units.join(&name));
            }
        }
    }
}

/// `systemd-analyze verify --root ROOT rstmon.service`: exit 0 and nothing printed
/// (it exits 0 on unknown keys and bad values, only saying so); else what it said.
pub fn verify(root: &Path) -> Result<(), String> {
    let mut cmd = Command::new(analyze());
    cmd.args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("rstmon.service");
    let out = run_to_exit(cmd, "systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify --root={} rstmon.service: {}:\n{said}",
            root.display(),
            out.status
        ))
    }
}
