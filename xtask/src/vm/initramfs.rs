//! The guest's root tree (busybox, `ip`, rstmon, the kernel's modules, /init) and the
//! cpio initramfs made from it.

use std::{
    fs, io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::kernels::Kernel;
use crate::util::{output, which};

// --- the guest's root tree ---------------------------------------------------------------------

/// Libraries `ldd` lists for a binary (none for a static one), with the loader.
fn ldd_paths(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let target = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            target.starts_with('/').then(|| PathBuf::from(target))
        })
        .collect()
}

/// Copies `src` to `<rootfs>/<dst>` (following symlinks), with its `ldd` libraries at
/// their host paths.
fn install_binary(rootfs: &Path, src: &Path, dst: &str) -> Result<()> {
    copy_into(rootfs, src, dst)?;
    // `ldd` exits non-zero for static binaries: then there is nothing to copy.
    let libs = output(Command::new("ldd").arg(src)).unwrap_or_default();
    for lib in ldd_paths(&libs) {
        let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
        if !rootfs.join(&rel).exists() {
            copy_into(rootfs, &lib, &rel)?;
        }
    }
    Ok(())
}

fn copy_into(rootfs: &Path, src: &Path, dst: &str) -> Result<()> {
    let to = rootfs.join(dst.trim_start_matches('/'));
    if let Some(p) = to.parent() {
        fs::create_dir_all(p)?;
    }
    fs::copy(src, &to).with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
    Ok(())
}

/// Builds the guest's root tree: busybox and its applet links, `ip` from iproute2,
/// rstmon, the modules, /init.
pub(super) fn build_rootfs(
    root: &Path,
    rootfs: &Path,
    rstmon: &Path,
    kernel: &Kernel,
) -> Result<usize> {
    let _ = fs::remove_dir_all(rootfs);
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "root",
        "var",
        "lib/modules",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    // `ip netns` keeps its namespaces in /var/run/netns.
    std::os::unix::fs::symlink("../run", rootfs.join("var/run"))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("no busybox (install busybox-static)")?;
    install_binary(rootfs, &busybox, "bin/busybox")?;
    // iproute2's ip: busybox's applet lacks `netns`.
    let ip = which("ip").context("no `ip` (install iproute2)")?;
    install_binary(rootfs, &ip, "sbin/ip")?;
    install_binary(rootfs, rstmon, "usr/bin/rstmon")?;
    let applets =
        output(Command::new(&busybox).arg("--list-full")).context("busybox --list-full")?;
    for a in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = rootfs.join(a);
        if link.exists() || link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(p) = link.parent() {
            fs::create_dir_all(p)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)?;
    }
    let init = root.join("tests/vm/init");
    fs::copy(&init, rootfs.join("init")).with_context(|| format!("copying {}", init.display()))?;
    fs::set_permissions(rootfs.join("init"), fs::Permissions::from_mode(0o755))?;
    let mut order = String::new();
    for m in &kernel.modules {
        let name = m.file_name().context("module path")?.to_string_lossy();
        fs::copy(m, rootfs.join("lib/modules").join(&*name))?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(rootfs.join("lib/modules/modules.order"), order)?;
    fs::write(rootfs.join("etc/hostname"), "rstmon-vm\n")?;
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    Ok(applets.lines().count())
}

// --- initramfs (cpio newc) ---------------------------------------------------------------------

/// A cpio "newc" archive writer: what the kernel unpacks as initramfs.
struct Cpio<W: io::Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: io::Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let nlink = if mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (header.len() + name.len() + 1) as u64;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    /// Adds `dir`'s contents recursively (sorted, parents first), named relative to `base`.
    fn add_tree(&mut self, base: &Path, dir: &Path) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .to_string();
            let md = fs::symlink_metadata(&p)?;
            let perm = md.mode() & 0o7777;
            if md.file_type().is_symlink() {
                let target = fs::read_link(&p)?;
                self.entry(
                    &name,
                    S_IFLNK | 0o777,
                    (0, 0),
                    target.to_string_lossy().as_bytes(),
                )?;
            } else if md.is_dir() {
                self.entry(&name, S_IFDIR | perm, (0, 0), &[])?;
                self.add_tree(base, &p)?;
            } else if md.is_file() {
                self.entry(&name, S_IFREG | perm, (0, 0), &fs::read(&p)?)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes the initramfs for `rootfs`, with /dev/console (the kernel opens it for /init
/// before devtmpfs is mounted). Returns its size.
pub(super) fn write_initramfs(rootfs: &Path, out: &Path) -> Result<u64> {
    let f = io::BufWriter::new(fs::File::create(out)?);
    let mut c = Cpio::new(f);
    c.add_tree(rootfs, rootfs)?;
    c.entry("dev/console", S_IFCHR | 0o600, (5, 1), &[])?;
    let written = c.written;
    c.finish()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_paths(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::new(Vec::new());
        c.entry("init", S_IFREG | 0o755, (0, 0), b"#!/bin/sh\n")
            .unwrap();
        let out = c.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // 110-byte header + "init\0" padded to 116, then 10 data bytes padded to 12.
        assert_eq!(&out[110..114], b"init");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
