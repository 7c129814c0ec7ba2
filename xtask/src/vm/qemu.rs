//! Booting a kernel and initramfs in qemu (TCG), with the serial console in a file.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::kernels::Kernel;
use crate::util::step;

/// Guest memory, MiB.
const GUEST_MEM_MIB: u32 = 2048;
/// Guest CPUs (TCG runs one host thread per vCPU).
pub(super) const GUEST_CPUS: u32 = 2;

pub(super) enum Exit {
    /// qemu exited by itself (the guest powered off, or the kernel panicked: panic=-1
    /// with -no-reboot).
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Boots `kernel` with `initramfs`, the serial console to `console` and qemu's own
/// output to `qemu_log`; kills qemu after `timeout`. Returns how it ended and how long
/// it ran.
pub(super) fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    console: &Path,
    qemu_log: &Path,
    timeout: Duration,
) -> Result<(Exit, Duration)> {
    let _ = fs::remove_file(console);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"])
        .args([
            "-smp",
            &GUEST_CPUS.to_string(),
            "-m",
            &GUEST_MEM_MIB.to_string(),
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4 rdinit=/init"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null());
    let log = fs::File::create(qemu_log)?;
    cmd.stdout(log.try_clone()?).stderr(log);
    let t = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let pid = child.id();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((Exit::Exited(status), t.elapsed()));
        }
        if t.elapsed() > timeout {
            step(&format!(
                "qemu (pid {pid}) still running after {} s: killing it",
                timeout.as_secs()
            ));
            // Child::kill sends SIGKILL to exactly this pid.
            let _ = child.kill();
            let _ = child.wait();
            return Ok((Exit::TimedOut, t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
