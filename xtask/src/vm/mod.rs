//! `cargo xtask vm`: boots Debian's 5.10, 6.1 and 6.12 cloud kernels in qemu (TCG) with a
//! busybox-static initramfs whose /init (`tests/vm/init`) runs `rstmon check`,
//! `rstmon selftest` (with an ftrace count of the reset tracepoints alongside) and a
//! short `rstmon run` with XDP on a veth, then powers off. The serial console log is
//! parsed and compared with what each kernel is expected to do (docs/compatibility.md).
//!
//! Work files live under `target/vm/`: `kernels/<package>/` caches the kernel image and
//! the modules the guest needs (downloaded once), `apt/<suite>/` holds the package lists
//! of a suite the system's apt sources do not have (bullseye, for 5.10), `rstmon` is the snapshot of the binary
//! put into the guests, `work/<series>/` holds the guest's root tree and initramfs
//! (removed after the run unless `--keep`), and `<series>-console.log` /
//! `<series>-qemu.log` are the serial console and qemu's own output of the last run.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};

use self::{
    initramfs::{build_rootfs, write_initramfs},
    kernels::ensure_kernel,
    qemu::{Exit, GUEST_CPUS, boot},
    report::{GuestReport, TABLE_HEADER, evaluate, print_report, table_row},
};
use crate::{
    setup::{deb_installed, ensure_packages},
    util::{build_rstmon_release, rstmon_release_bin, step, which, workspace_root},
};

mod initramfs;
mod kernels;
mod qemu;
mod report;

#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Which kernel series to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelSel,
    /// Keep the work directory (guest root tree, initramfs) under target/vm/work.
    #[arg(long)]
    pub keep: bool,
    /// Wall-clock limit per kernel, seconds; qemu is killed after it.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Use the existing target/release/rstmon instead of running `cargo build --release`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSel {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

/// A kernel series and how Debian names its cloud image packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Series {
    label: &'static str,
    /// Package name = prefix + <number> + rest, e.g. linux-image-5.10.0-32-cloud-amd64,
    /// linux-image-6.1.0-56-cloud-amd64 or linux-image-6.12.117+deb12-cloud-amd64.
    prefix: &'static str,
    /// The Debian suite to take it from when the system's apt sources lack it (an apt
    /// source list of its own under target/vm/apt/); None: the system's sources.
    suite: Option<&'static str>,
    /// Whether the series reports reset reasons and fires `tcp_send_reset` for resets
    /// sent without a full socket (both came in 6.10).
    has_reason: bool,
    /// Whether the series has `bpf_ktime_get_coarse_ns` (5.11+).
    coarse_clock: bool,
    /// Whether `skb:kfree_skb` reports drop reasons (5.17+): check's `verdicts` line.
    drop_reasons: bool,
}

const SERIES: [Series; 3] = [
    Series {
        label: "5.10",
        prefix: "linux-image-5.10.0-",
        suite: Some("bullseye"),
        has_reason: false,
        coarse_clock: false,
        drop_reasons: false,
    },
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suite: None,
        has_reason: false,
        coarse_clock: true,
        drop_reasons: true,
    },
    Series {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suite: None,
        has_reason: true,
        coarse_clock: true,
        drop_reasons: true,
    },
];

impl KernelSel {
    fn series(self) -> Vec<Series> {
        match self {
            Self::V5_10 => vec![SERIES[0]],
            Self::V6_1 => vec![SERIES[1]],
            Self::V6_12 => vec![SERIES[2]],
            Self::All => SERIES.to_vec(),
        }
    }
}

// --- host prerequisites ------------------------------------------------------------------------

/// qemu, busybox-static, iproute2 (its `ip` goes into the guest) and xz (modules of
/// newer kernels are .ko.xz). Idempotent; one line.
fn setup_packages() -> Result<()> {
    // (package, present?)
    let wanted: [(&str, bool); 4] = [
        ("qemu-system-x86", which("qemu-system-x86_64").is_some()),
        ("busybox-static", deb_installed("busybox-static")),
        ("iproute2", which("ip").is_some()),
        ("xz-utils", which("xz").is_some()),
    ];
    ensure_packages(&wanted)
}

// --- rstmon ------------------------------------------------------------------------------------

fn build_rstmon(root: &Path, no_build: bool) -> Result<PathBuf> {
    let bin = rstmon_release_bin(root);
    if no_build {
        step(&format!("rstmon: using {} (--no-build)", bin.display()));
    } else {
        step("rstmon: cargo build --release -p rst-user");
        let took = build_rstmon_release(root)?;
        step(&format!("rstmon: built in {:.0} s", took.as_secs_f64()));
    }
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    Ok(bin)
}

// --- the tier ----------------------------------------------------------------------------------

struct Outcome {
    label: &'static str,
    package: String,
    elapsed: Duration,
    problems: Vec<String>,
    /// The kernel's row of the table.
    row: [String; TABLE_HEADER.len()],
}

fn run_one(
    root: &Path,
    vm_dir: &Path,
    series: &Series,
    rstmon: &Path,
    args: &VmArgs,
) -> Result<Outcome> {
    let kernel = ensure_kernel(series, vm_dir)?;
    let work = vm_dir.join("work").join(series.label);
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&work)?;
    let applets = build_rootfs(root, &rootfs, rstmon, &kernel)?;
    let initramfs = work.join("initramfs.cpio");
    let size = write_initramfs(&rootfs, &initramfs)?;
    step(&format!(
        "{}: initramfs {:.1} MB (busybox with {applets} applets, ip, rstmon, {} module(s))",
        series.label,
        size as f64 / 1e6,
        kernel.modules.len()
    ));
    let console = vm_dir.join(format!("{}-console.log", series.label));
    let qemu_log = vm_dir.join(format!("{}-qemu.log", series.label));
    step(&format!(
        "{}: booting {} in qemu (TCG, {} vCPUs, timeout {} s); console: {}",
        series.label,
        kernel.package,
        GUEST_CPUS,
        args.timeout,
        console.display()
    ));
    let (exit, elapsed) = boot(
        &kernel,
        &initramfs,
        &console,
        &qemu_log,
        Duration::from_secs(args.timeout),
    )?;
    let log = fs::read_to_string(&console).unwrap_or_default();
    let report = GuestReport::parse(&log);
    if report.release.is_none() || !report.ended {
        // Boot or /init trouble: show what there is.
        let qemu = fs::read_to_string(&qemu_log).unwrap_or_default();
        for (what, text) in [("qemu", &qemu), ("console", &log)] {
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            eprintln!("--- last lines of the {what} log:");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
    }
    let mut problems = Vec::new();
    match exit {
        Exit::TimedOut => problems.push(format!("timed out after {} s", args.timeout)),
        Exit::Exited(s) if !s.success() => problems.push(format!("qemu exited with {s}")),
        Exit::Exited(_) => {}
    }
    problems.extend(evaluate(series, &report));
    print_report(series, &kernel, &report, elapsed);
    let row = table_row(series, &report);
    if !args.keep {
        let _ = fs::remove_dir_all(&work);
        // Only when empty: other kernels' kept trees stay.
        let _ = fs::remove_dir(vm_dir.join("work"));
    }
    Ok(Outcome {
        label: series.label,
        package: kernel.package,
        elapsed,
        problems,
        row,
    })
}

/// The per-kernel table, columns padded to their widest cell.
fn print_table(outcomes: &[Outcome]) {
    let mut rows = vec![TABLE_HEADER.map(String::from)];
    rows.extend(outcomes.iter().map(|o| o.row.clone()));
    let widths: Vec<usize> = (0..TABLE_HEADER.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// `cargo xtask vm`: boots each selected kernel in qemu and runs rstmon in it.
pub fn vm(args: VmArgs) -> Result<()> {
    let root = workspace_root();
    let vm_dir = root.join("target/vm");
    fs::create_dir_all(&vm_dir)?;
    setup_packages()?;
    let rstmon = build_rstmon(&root, args.no_build)?;
    // A snapshot: other builds may replace target/release/rstmon while the VMs run.
    let snapshot = vm_dir.join("rstmon");
    fs::copy(&rstmon, &snapshot)?;
    let mut outcomes = Vec::new();
    for series in args.kernel.series() {
        outcomes.push(run_one(&root, &vm_dir, &series, &snapshot, &args)?);
    }
    println!();
    print_table(&outcomes);
    println!();
    let mut failed = 0;
    for o in &outcomes {
        if o.problems.is_empty() {
            println!(
                "vm {:<5} ok      {:>4.0} s  {}",
                o.label,
                o.elapsed.as_secs_f64(),
                o.package
            );
        } else {
            failed += 1;
            println!(
                "vm {:<5} FAIL    {:>4.0} s  {}",
                o.label,
                o.elapsed.as_secs_f64(),
                o.package
            );
            for p in &o.problems {
                println!("    {p}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} kernel(s) failed; console logs in {}",
            vm_dir.display()
        );
    }
    Ok(())
}
