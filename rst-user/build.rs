//! Builds the eBPF object (`rst-ebpf`) with aya-build into OUT_DIR, and records what
//! `rstmon --version` and `rstmon_build_info` say about the build (revision, rustc,
//! target, profile, features, commit date).
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    build_info();
    let metadata_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or_else(|| anyhow!("rst-user has no parent directory"))?
        .join("rst-ebpf");
    let root_dir = metadata_root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", metadata_root.display()))?;
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Host-only builds (clippy, docs): an empty placeholder keeps include_bytes working;
        // loading it fails at run time with a clear message.
        let out = PathBuf::from(env::var("OUT_DIR")?).join("rst-ebpf");
        if !out.exists() {
            fs::write(&out, b"").context("writing the placeholder eBPF object")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let package = aya_build::Package {
        name: "rst-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).context(
        "building the eBPF object (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

/// Runs `git ARGS` in this crate's directory; its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Sets `RSTMON_BUILD_REVISION`, `RSTMON_BUILD_DATE`, `RSTMON_BUILD_RUSTC`,
/// `RSTMON_BUILD_TARGET`, `RSTMON_BUILD_PROFILE` and `RSTMON_BUILD_FEATURES` for the
/// crate. The revision and date come from git (the commit's short hash and its commit
/// date); outside a git checkout (a source
/// tarball) from `RSTMON_REVISION` / `RSTMON_BUILD_DATE` in the build's environment,
/// else `unknown`.
fn build_info() {
    for var in ["RSTMON_REVISION", "RSTMON_BUILD_DATE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // A commit moves HEAD's reflog; a checkout moves HEAD.
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            let p = PathBuf::from(p);
            let p = if p.is_absolute() {
                p
            } else {
                PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(p)
            };
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let revision = git(&["rev-parse", "--short=12", "HEAD"])
        .or_else(|| env::var("RSTMON_REVISION").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let date = git(&["log", "-1", "--format=%cs", "HEAD"])
        .or_else(|| env::var("RSTMON_BUILD_DATE").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let mut features: Vec<String> = env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    let profile = env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    for (k, v) in [
        ("RSTMON_BUILD_REVISION", revision),
        ("RSTMON_BUILD_DATE", date),
        ("RSTMON_BUILD_RUSTC", rustc),
        ("RSTMON_BUILD_TARGET", target),
        ("RSTMON_BUILD_PROFILE", profile),
        ("RSTMON_BUILD_FEATURES", features),
    ] {
        println!("cargo:rustc-env={k}={v}");
    }
}
