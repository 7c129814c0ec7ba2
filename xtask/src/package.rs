//! `cargo xtask deb`: the Debian package, built with cargo-deb from the release binary,
//! the man pages and completions rst-user's `gen-docs` example writes, and contrib/
//! (the unit, /etc/default/rstmon, alerts, dashboard): see `[package.metadata.deb]` in
//! rst-user/Cargo.toml.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{build_rstmon_release, cargo, output, run, step};

/// The cargo-deb that builds the package (installed from crates.io, `--locked`).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Installs cargo-deb CARGO_DEB_VERSION unless it is there (one line either way).
fn setup_cargo_deb() -> Result<()> {
    let ok = output(cargo().args(["deb", "--version"]))
        .is_some_and(|v| v.split_whitespace().any(|w| w == CARGO_DEB_VERSION));
    if ok {
        step(&format!("cargo-deb {CARGO_DEB_VERSION}: present"));
        return Ok(());
    }
    step(&format!(
        "cargo-deb {CARGO_DEB_VERSION}: installing from crates.io (a minute or two)"
    ));
    run(cargo().args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
        "--force",
    ]))
}

/// Builds target/debian/rstmon_<version>-1_<arch>.deb and returns its path.
pub(crate) fn deb(root: &Path) -> Result<PathBuf> {
    setup_cargo_deb()?;
    step("package: building rstmon (release) and gen-docs");
    build_rstmon_release(root)?;
    run(cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "rst-user",
        "--example",
        "gen-docs",
    ]))?;
    let assets = root.join("target/release/assets");
    let _ = std::fs::remove_dir_all(&assets);
    step("package: man pages (clap_mangen) and bash/zsh/fish completions (clap_complete)");
    run(Command::new(root.join("target/release/examples/gen-docs")).arg(&assets))?;
    let man = assets.join("man");
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    if pages.is_empty() {
        bail!("gen-docs wrote no man page into {}", man.display());
    }
    // Debian policy: man pages compressed with gzip -9n (no name, no time stamp).
    run(Command::new("gzip").arg("-9nf").args(&pages))?;
    step("package: cargo deb");
    let out = output(
        cargo()
            .current_dir(root)
            .args(["deb", "-p", "rst-user", "--no-build"]),
    )
    .context("cargo deb -p rst-user --no-build failed (run it by hand to see why)")?;
    let deb = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb printed no .deb path:\n{out}"))?;
    step(&format!("package: {}", deb.display()));
    Ok(deb)
}
