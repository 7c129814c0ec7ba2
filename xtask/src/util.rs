//! Small helpers every task uses: progress lines, running commands, finding programs,
//! the workspace and the release build of rstmon.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// One progress line on stderr.
pub(crate) fn step(msg: &str) {
    eprintln!("xtask: {msg}");
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs `cmd` with inherited stdio; an error unless it exits successfully.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The stdout of `cmd` (stderr discarded), or None when it cannot run or fails.
pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the shell's `command -v` says about `program`.
fn command_v(program: &str) -> Option<String> {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")]))
}

/// Whether `program` is on PATH.
pub(crate) fn have(program: &str) -> bool {
    command_v(program).is_some()
}

/// Full path of a command, from PATH or the sbin directories.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    command_v(program)
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.is_absolute())
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| p.exists())
        })
}

/// The cargo that runs xtask (`$CARGO`), else `cargo` from PATH.
pub(crate) fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Where `build_rstmon_release` puts the rstmon binary.
pub(crate) fn rstmon_release_bin(root: &Path) -> PathBuf {
    root.join("target/release/rstmon")
}

/// `cargo build --release -p rst-user` in `root`; returns how long it took.
pub(crate) fn build_rstmon_release(root: &Path) -> Result<Duration> {
    let t = Instant::now();
    run(cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "rst-user"]))?;
    Ok(t.elapsed())
}
