//! `cargo xtask`: setup, run, test and bench for rstmon. It only wraps cargo and the
//! system tools; the eBPF object is built by rst-user/build.rs (aya-build).

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod vm;

/// bpf-linker version that builds against this toolchain's LLVM (see docs/building.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The toolchain that compiles the eBPF crate.
const EBPF_TOOLCHAIN: &str = "nightly";

#[derive(Parser)]
#[command(name = "xtask", about = "rstmon developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent; one line per step).
    Setup,
    /// Set up, build in release mode and run `rstmon` (default subcommand `run`).
    Run {
        /// Arguments for rstmon, e.g. `-- -i eth0` or `-- watch --json`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test tier: lints, host unit tests, BPF_PROG_TEST_RUN tests of
    /// the real object, privileged network-namespace tests.
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the VM tier (Debian's 6.1 and 6.12 kernels in qemu).
        #[arg(long)]
        no_vm: bool,
    },
    /// Boot Debian's 6.1 and 6.12 cloud kernels in qemu (TCG) and run rstmon check,
    /// selftest and run in each (docs/compatibility.md).
    Vm(vm::VmArgs),
    /// Set up and run the benchmarks (`docs/performance.md`).
    Bench {
        /// Arguments for the benchmark binary (e.g. `--quick`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

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

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(program: &str) -> bool {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_some()
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
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !have(cmd) && !Path::new("/usr/sbin").join(cmd).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        step("Debian packages (iproute2, tcpdump, util-linux): present");
        return Ok(());
    }
    install_packages(&missing)
}

/// `apt-get update` and `apt-get install` of `missing`, with one line saying so.
pub(crate) fn install_packages(missing: &[&str]) -> Result<()> {
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

/// promtool, for `promtool check metrics`: taken out of Debian's prometheus package
/// into target/tools, so no Prometheus service gets installed or started.
fn setup_promtool() -> Result<PathBuf> {
    let tools = workspace_root().join("target/tools");
    let promtool = tools.join("promtool");
    if promtool.exists() {
        step("promtool: present");
        return Ok(promtool);
    }
    step("promtool: extracting from Debian's prometheus package into target/tools");
    std::fs::create_dir_all(&tools)?;
    let dl = tools.join("deb");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let download = |dir: &Path| {
        Command::new("apt-get")
            .args(["download", "-qq", "prometheus"])
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download(&dl) {
        run(privileged("apt-get").args(["update", "-qq"]))?;
        if !download(&dl) {
            bail!("apt-get download prometheus failed");
        }
    }
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("no .deb downloaded")?;
    let x = dl.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    std::fs::copy(x.join("usr/bin/promtool"), &promtool)?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(promtool)
}

fn setup() -> Result<PathBuf> {
    setup_rust_src()?;
    setup_bpf_linker()?;
    setup_packages()?;
    setup_promtool()
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build_release() -> Result<()> {
    step("building rstmon (release)");
    let t = Instant::now();
    run(cargo()
        .current_dir(workspace_root())
        .args(["build", "--release", "-p", "rst-user"]))?;
    step(&format!("built in {:.0} s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Runs the lints and the cargo tests; returns (passed, failed) of the cargo tests.
fn test(no_lint: bool, promtool: &Path) -> Result<(u64, u64)> {
    let root = workspace_root();
    if !no_lint {
        step("lint: cargo fmt --check");
        run(cargo().current_dir(&root).args(["fmt", "--all", "--check"]))?;
        step("lint: clippy (workspace, host)");
        run(cargo().current_dir(&root).args([
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
            ]))?;
    }
    let mut t = cargo();
    t.current_dir(&root).env("RSTMON_PROMTOOL", promtool);
    if !is_root() {
        step("not root: running test binaries through sudo -E");
        t.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
    }
    step("tests: host unit tests, BPF_PROG_TEST_RUN, network-namespace integration");
    // One thread: the tracepoint counters are host-wide, so tests that assert exact
    // deltas must not overlap. Doc-tests are skipped (there are none).
    t.args([
        "test",
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
fn run_counting(cmd: &mut Command) -> Result<(u64, u64, std::process::ExitStatus)> {
    use std::io::{BufRead as _, BufReader, Write as _};
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = (|| -> Result<()> {
        match cli.cmd {
            Cmd::Setup => setup().map(|_| ()),
            Cmd::Run { args } => {
                setup()?;
                build_release()?;
                let bin = workspace_root().join("target/release/rstmon");
                let mut args = args;
                if args.first().is_none_or(|a| a.starts_with('-')) {
                    args.insert(0, "run".into());
                }
                step(&format!("running {} {}", bin.display(), args.join(" ")));
                run(privileged(&bin.display().to_string()).args(&args))
            }
            Cmd::Test { no_lint, no_vm } => {
                let promtool = setup()?;
                let (passed, failed) = test(no_lint, &promtool)?;
                if !no_vm {
                    step("VM tier: rstmon on Debian's 6.1 and 6.12 kernels (qemu, TCG)");
                    vm::vm(vm::VmArgs {
                        kernel: vm::KernelSel::All,
                        keep: false,
                        timeout: 300,
                        no_build: false,
                    })?;
                }
                // The last line: the cargo tests' total (the VM tier reports above).
                println!("tests: {passed} passed, {failed} failed");
                Ok(())
            }
            Cmd::Vm(args) => {
                setup()?;
                vm::vm(args)
            }
            Cmd::Bench { args } => {
                setup()?;
                run(cargo()
                    .current_dir(workspace_root())
                    .args(["bench", "-p", "rst-user", "--bench", "rstmon", "--"])
                    .args(&args))
            }
        }
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
