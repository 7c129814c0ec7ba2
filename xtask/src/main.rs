//! `cargo xtask`: setup, run, test and bench for rstmon. It only wraps cargo and the
//! system tools; the eBPF object is built by rst-user/build.rs (aya-build).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{
    setup::{privileged, setup, setup_bench},
    util::{build_rstmon_release, cargo, rstmon_release_bin, run, step, workspace_root},
};

mod package;
mod setup;
mod test;
mod util;
mod vm;

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
        /// Skip the VM tier (Debian's 5.10, 6.1 and 6.12 kernels in qemu).
        #[arg(long)]
        no_vm: bool,
    },
    /// Boot Debian's 5.10, 6.1 and 6.12 cloud kernels in qemu (TCG) and run rstmon check,
    /// selftest and run in each (docs/compatibility.md).
    Vm(vm::VmArgs),
    /// Build the Debian package (cargo-deb): binary, unit, /etc/default/rstmon, man
    /// pages, completions, alerts and dashboard, in target/debian/.
    Deb,
    /// Set up (plus bpftrace and node_exporter) and run the benchmarks
    /// (`docs/performance.md`).
    Bench {
        /// Arguments for the benchmark binary (e.g. `--quick`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = (|| -> Result<()> {
        match cli.cmd {
            Cmd::Setup => setup().map(|_| ()),
            Cmd::Run { args } => {
                setup()?;
                step("building rstmon (release)");
                let root = workspace_root();
                let took = build_rstmon_release(&root)?;
                step(&format!("built in {:.0} s", took.as_secs_f64()));
                let bin = rstmon_release_bin(&root);
                let mut args = args;
                if args.first().is_none_or(|a| a.starts_with('-')) {
                    args.insert(0, "run".into());
                }
                step(&format!("running {} {}", bin.display(), args.join(" ")));
                run(privileged(&bin.display().to_string()).args(&args))
            }
            Cmd::Test { no_lint, no_vm } => {
                let tools = setup()?;
                let deb = package::deb(&workspace_root())?;
                let (passed, failed) = test::test(no_lint, &tools, &deb)?;
                if !no_vm {
                    step("VM tier: rstmon on Debian's 5.10, 6.1 and 6.12 kernels (qemu, TCG)");
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
            Cmd::Deb => {
                setup()?;
                package::deb(&workspace_root()).map(|_| ())
            }
            Cmd::Vm(args) => {
                setup()?;
                vm::vm(args)
            }
            Cmd::Bench { args } => {
                setup()?;
                setup_bench()?;
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
