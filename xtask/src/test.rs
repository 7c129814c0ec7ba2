//! `cargo xtask test` before the VM tier: the lints and the cargo tests (host unit
//! tests, BPF_PROG_TEST_RUN, network-namespace integration), counted.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup::{EBPF_TOOLCHAIN, Tools},
    util::{cargo, is_root, run, step, workspace_root},
};

/// Runs the lints and the cargo tests; returns (passed, failed) of the cargo tests.
pub(crate) fn test(no_lint: bool, tools: &Tools, deb: &Path) -> Result<(u64, u64)> {
    let root = workspace_root();
    if !no_lint {
        lints(&root)?;
    }
    cargo_test(&root, tools, deb)
}

/// cargo fmt --check, and clippy for the host crates and for rst-ebpf.
fn lints(root: &Path) -> Result<()> {
    step("lint: cargo fmt --check");
    run(cargo().current_dir(root).args(["fmt", "--all", "--check"]))?;
    step("lint: clippy (workspace, host)");
    run(cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "rst-ebpf",
        "--all-targets",
        "--all-features",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("lint: clippy (rst-ebpf, bpfel-unknown-none)");
    run(Command::new("cargo")
        .current_dir(root.join("rst-ebpf"))
        .args([
            &format!("+{EBPF_TOOLCHAIN}"),
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
}

/// The cargo tests of the workspace (not rst-ebpf), as root, with the tools and the
/// package they check (RSTMON_* variables); returns (passed, failed).
fn cargo_test(root: &Path, tools: &Tools, deb: &Path) -> Result<(u64, u64)> {
    let mut t = cargo();
    t.current_dir(root).env("RSTMON_DEB", deb);
    tools.env(&mut t);
    if !is_root() {
        step("not root: running test binaries through sudo -E");
        t.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    step("tests: host unit tests, BPF_PROG_TEST_RUN, network-namespace integration");
    // One thread: the tracepoint counters are host-wide, so tests that assert exact
    // deltas must not overlap. Doc-tests are skipped (there are none). Every test binary
    // runs even when one fails, so that one run shows every failure.
    t.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "rst-ebpf",
        "--release",
        "--all-features",
        "--lib",
        "--bins",
        "--tests",
        "--",
        "--test-threads=1",
    ]);
    let (passed, failed, status) = run_counting(&mut t)?;
    if !status.success() || failed > 0 {
        println!("tests: {passed} passed, {failed} failed");
        bail!("cargo test failed ({status})");
    }
    Ok((passed, failed))
}

/// Runs `cargo test`, passing its output through, and adds up its "test result" lines.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64, ExitStatus)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("piped stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |what: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(what))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
        }
    }
    Ok((passed, failed, child.wait()?))
}
