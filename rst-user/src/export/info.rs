//! What this build of rstmon is (`rstmon --version`, `rstmon_build_info`) and which
//! kernel it runs on (`rstmon_kernel_info`). The build's facts are recorded by
//! `build.rs`: the git revision and commit date (or `RSTMON_REVISION` /
//! `RSTMON_BUILD_DATE` for a build outside git, else `unknown`), rustc, target,
//! profile and cargo features.

use std::fs;

use super::family::{FamilyBuilder, Kind};

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Short git hash of the commit built, or `unknown`.
pub const REVISION: &str = env!("RSTMON_BUILD_REVISION");
/// The commit's date (`YYYY-MM-DD`), or `unknown`.
pub const DATE: &str = env!("RSTMON_BUILD_DATE");
/// `rustc --version` of the compiler that built rstmon.
pub const RUSTC: &str = env!("RSTMON_BUILD_RUSTC");
/// The target triple.
pub const TARGET: &str = env!("RSTMON_BUILD_TARGET");
/// The cargo profile (`release`, `debug`).
pub const PROFILE: &str = env!("RSTMON_BUILD_PROFILE");
/// Enabled cargo features, comma-separated, or `none`.
pub const FEATURES: &str = env!("RSTMON_BUILD_FEATURES");

/// `rstmon -V`: version, revision and commit date.
pub const SHORT_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("RSTMON_BUILD_REVISION"),
    " ",
    env!("RSTMON_BUILD_DATE"),
    ")"
);

/// `rstmon --version`: [`SHORT_VERSION`] and the build's details, one per line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nrevision: ",
    env!("RSTMON_BUILD_REVISION"),
    "\ncommit date: ",
    env!("RSTMON_BUILD_DATE"),
    "\nrustc: ",
    env!("RSTMON_BUILD_RUSTC"),
    "\ntarget: ",
    env!("RSTMON_BUILD_TARGET"),
    "\nprofile: ",
    env!("RSTMON_BUILD_PROFILE"),
    "\nfeatures: ",
    env!("RSTMON_BUILD_FEATURES"),
    "\ntls: rustls (ring)"
);

/// The running kernel's version string (`uname -v`, `/proc/sys/kernel/version`), or
/// `unknown`.
pub fn kernel_version() -> String {
    fs::read_to_string("/proc/sys/kernel/version")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `rstmon_build_info{version, revision, rustc} 1`.
pub fn build_family<'a>(version: &'a str, revision: &'a str, rustc: &'a str) -> FamilyBuilder<'a> {
    let mut f = FamilyBuilder::new(
        "rstmon_build_info",
        "rstmon's version, the git revision it was built from and the rustc that built it; always 1.",
        Kind::Gauge,
        &["version", "revision", "rustc"],
    );
    f.add(&[version, revision, rustc], 1.0);
    f
}

/// `rstmon_kernel_info{release, version} 1`.
pub fn kernel_family<'a>(release: &'a str, version: &'a str) -> FamilyBuilder<'a> {
    let mut f = FamilyBuilder::new(
        "rstmon_kernel_info",
        "The running kernel: its release (uname -r) and version (uname -v); always 1.",
        Kind::Gauge,
        &["release", "version"],
    );
    f.add(&[release, version], 1.0);
    f
}

/// `rstmon_ready`: 0 while the programs are loaded, verified and attached at start-up
/// (the exposition then has only this, the build and kernel, the process and the HTTP
/// server's own series), 1 from then on. `/-/ready` answers the same question.
pub fn ready_family<'a>(ready: bool) -> FamilyBuilder<'a> {
    let mut f = FamilyBuilder::new(
        "rstmon_ready",
        "1 once rstmon's programs are loaded and attached and every rstmon_* family is exported; 0 while it starts (see /-/ready).",
        Kind::Gauge,
        &[],
    );
    f.add(&[], f64::from(u8::from(ready)));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_build() {
        assert!(SHORT_VERSION.starts_with(VERSION));
        assert!(SHORT_VERSION.contains(REVISION));
        for part in [REVISION, RUSTC, TARGET, PROFILE, FEATURES, DATE] {
            assert!(!part.is_empty());
            assert!(LONG_VERSION.contains(part), "{part} missing");
        }
        assert!(RUSTC.starts_with("rustc "), "{RUSTC}");
    }
}
