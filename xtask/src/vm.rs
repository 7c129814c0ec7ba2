//! `cargo xtask vm`: boots Debian's 6.1 and 6.12 cloud kernels in qemu (TCG) with a
//! busybox-static initramfs whose /init (`tests/vm/init`) runs `rstmon check`,
//! `rstmon selftest` (with an ftrace count of the reset tracepoints alongside) and a
//! short `rstmon run` with XDP on a veth, then powers off. The serial console log is
//! parsed and compared with what each kernel is expected to do (docs/compatibility.md).
//!
//! Work files live under `target/vm/`: `kernels/<package>/` caches the kernel image and
//! the modules the guest needs (downloaded once), `rstmon` is the snapshot of the binary
//! put into the guests, `work/<series>/` holds the guest's root tree and initramfs
//! (removed after the run unless `--keep`), and `<series>-console.log` /
//! `<series>-qemu.log` are the serial console and qemu's own output of the last run.

use std::{
    collections::BTreeMap,
    env, fs,
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{apt, output, run, step, workspace_root};
use anyhow::{Context as _, Result, bail};

/// Module the guest needs when the kernel has it as a module (veth pairs for selftest
/// and for the XDP check).
const GUEST_MODULES: [&str; 1] = ["veth"];
/// Guest memory, MiB.
const GUEST_MEM_MIB: u32 = 2048;
/// Guest CPUs (TCG runs one host thread per vCPU).
const GUEST_CPUS: u32 = 2;

#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Which kernel series to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelSel,
    /// Keep the work directory (guest root tree, initramfs) under target/vm/work.
    #[arg(long)]
    pub keep: bool,
    /// Wall-clock limit per kernel, seconds; qemu is killed after it.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Use the existing target/release/rstmon instead of running `cargo build --release`.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSel {
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
    /// Package name = prefix + <number> + rest, e.g. linux-image-6.1.0-56-cloud-amd64
    /// or linux-image-6.12.117+deb12-cloud-amd64.
    prefix: &'static str,
    /// Whether the series reports reset reasons (6.10+).
    has_reason: bool,
}

const SERIES: [Series; 2] = [
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        has_reason: false,
    },
    Series {
        label: "6.12",
        prefix: "linux-image-6.12.",
        has_reason: true,
    },
];

impl KernelSel {
    fn series(self) -> Vec<Series> {
        match self {
            Self::V6_1 => vec![SERIES[0]],
            Self::V6_12 => vec![SERIES[1]],
            Self::All => SERIES.to_vec(),
        }
    }
}

/// Full path of a command, from PATH or the sbin directories.
fn which(program: &str) -> Option<PathBuf> {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")]))
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.is_absolute())
        .or_else(|| {
            ["/usr/sbin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(program))
                .find(|p| p.exists())
        })
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.trim() == "install ok installed")
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
    let names: Vec<&str> = wanted.iter().map(|(p, _)| *p).collect();
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        step(&format!("Debian packages ({}): present", names.join(", ")));
        return Ok(());
    }
    crate::install_packages(&missing)
}

/// The number that orders packages of a series: `56` of linux-image-6.1.0-56-cloud-amd64,
/// `117` of linux-image-6.12.117+deb12-cloud-amd64. None for other names (meta
/// packages, -dbg, -unsigned, other flavours).
fn package_number(series: &Series, name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(series.prefix)?
        .strip_suffix("-cloud-amd64")?;
    let (num, tail) = match rest.split_once('+') {
        Some((n, t)) => (n, Some(t)),
        None => (rest, None),
    };
    if tail.is_some_and(|t| !t.starts_with("deb") || t.contains('-')) {
        return None;
    }
    num.parse().ok()
}

/// The newest cloud image package of `series` that apt knows about.
fn newest_package(series: &Series, names: &str) -> Option<String> {
    names
        .lines()
        .map(str::trim)
        .filter_map(|n| package_number(series, n).map(|v| (v, n)))
        .max_by_key(|(v, _)| *v)
        .map(|(_, n)| n.to_string())
}

fn apt_package_names(series: &Series) -> String {
    output(Command::new("apt-cache").args(["pkgnames", series.prefix])).unwrap_or_default()
}

/// A kernel ready to boot: its image and the (decompressed) modules the guest loads,
/// in load order.
struct Kernel {
    package: String,
    vmlinuz: PathBuf,
    modules: Vec<PathBuf>,
}

const CACHE_DONE: &str = ".complete";

fn load_cached(dir: &Path, package: &str) -> Result<Kernel> {
    let order = fs::read_to_string(dir.join("modules/modules.order")).unwrap_or_default();
    Ok(Kernel {
        package: package.to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules: order
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| dir.join("modules").join(l))
            .collect(),
    })
}

/// Finds (apt-cache), downloads (apt-get download) and unpacks (dpkg-deb -x) the newest
/// cloud kernel of `series` into target/vm/kernels/<package>, keeping only the image and
/// the guest's modules. Cached: a second run only looks up the name.
fn ensure_kernel(series: &Series, vm_dir: &Path) -> Result<Kernel> {
    let kernels = vm_dir.join("kernels");
    let mut names = apt_package_names(series);
    if newest_package(series, &names).is_none() {
        step(&format!(
            "kernel {}: no {}* package in apt's lists; apt-get update",
            series.label, series.prefix
        ));
        let _ = apt(&["update", "-qq"]).status();
        names = apt_package_names(series);
    }
    let package = match newest_package(series, &names) {
        Some(p) => p,
        None => {
            // Offline: fall back to the newest cached one.
            let cached = fs::read_dir(&kernels)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| kernels.join(n).join(CACHE_DONE).exists())
                .collect::<Vec<_>>()
                .join("\n");
            newest_package(series, &cached).with_context(|| {
                format!(
                    "no {}<n>-cloud-amd64 package known to apt and none cached",
                    series.prefix
                )
            })?
        }
    };
    let dir = kernels.join(&package);
    if dir.join(CACHE_DONE).exists() {
        step(&format!(
            "kernel {}: {package} (cached in target/vm/kernels)",
            series.label
        ));
        return load_cached(&dir, &package);
    }
    step(&format!(
        "kernel {}: downloading {package} (apt-get download, about 30 MB)",
        series.label
    ));
    let dl = kernels.join("dl");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-qq", &package])
            .current_dir(&dl)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        run(&mut apt(&["update", "-qq"]))?;
        if !download() {
            bail!("apt-get download {package} failed");
        }
    }
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let x = dl.join("x");
    step(&format!(
        "kernel {}: unpacking {}",
        series.label,
        deb.display()
    ));
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;

    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("modules"))?;
    let boot = x.join("boot");
    let image = fs::read_dir(&boot)
        .with_context(|| format!("{} has no /boot", deb.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the package has no /boot/vmlinuz-*")?;
    fs::copy(&image, dir.join("vmlinuz"))?;
    let release = image
        .file_name()
        .and_then(|n| {
            n.to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .unwrap_or_default();
    let config = fs::read_to_string(boot.join(format!("config-{release}"))).unwrap_or_default();
    fs::write(dir.join("config"), &config)?;
    let moddir = x.join("lib/modules").join(&release);
    let mut order = Vec::new();
    for m in GUEST_MODULES {
        let sym = format!("CONFIG_{}=y", m.to_uppercase());
        if config.lines().any(|l| l == sym) {
            step(&format!("kernel {}: {m} is built in", series.label));
            continue;
        }
        collect_module(&moddir, m, &dir.join("modules"), &mut order, 0)?;
    }
    fs::write(
        dir.join("modules/modules.order"),
        order
            .iter()
            .map(|n| format!("{n}.ko\n"))
            .collect::<String>(),
    )?;
    fs::write(dir.join("release"), &release)?;
    fs::write(dir.join(CACHE_DONE), "")?;
    let _ = fs::remove_dir_all(&dl);
    step(&format!(
        "kernel {}: {release}; guest modules: {}",
        series.label,
        if order.is_empty() {
            "none".to_string()
        } else {
            order.join(", ")
        }
    ));
    load_cached(&dir, &package)
}

/// Module file names compare with `-` and `_` as the same character.
fn norm_module(name: &str) -> String {
    name.replace('-', "_")
}

fn find_module_file(moddir: &Path, name: &str) -> Option<PathBuf> {
    let want = norm_module(name);
    let mut stack = vec![moddir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = e.file_name().to_string_lossy().to_string();
            let base = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|s| file.strip_suffix(s));
            if base.is_some_and(|b| norm_module(b) == want) {
                return Some(p);
            }
        }
    }
    None
}

/// The plain .ko bytes of a possibly compressed module (host xz/zstd/gzip).
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => Ok(fs::read(path)?),
        Some(t) => {
            let out = Command::new(t)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("running {t} -dc (install it to unpack {name})"))?;
            if !out.status.success() {
                bail!("{t} -dc {name} failed");
            }
            Ok(out.stdout)
        }
    }
}

/// `depends=` of a module's .modinfo section.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko
        .windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
    else {
        return Vec::new();
    };
    let start = at + 1 + key.len();
    let end = ko[start..]
        .iter()
        .position(|&b| b == 0)
        .map_or(ko.len(), |e| start + e);
    String::from_utf8_lossy(&ko[start..end])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Copies `name` and, first, its dependencies (decompressed) into `out`; `order` gets
/// the load order.
fn collect_module(
    moddir: &Path,
    name: &str,
    out: &Path,
    order: &mut Vec<String>,
    depth: u32,
) -> Result<()> {
    let n = norm_module(name);
    if order.contains(&n) {
        return Ok(());
    }
    if depth > 16 {
        bail!("module dependencies of {name} nest too deep");
    }
    let file = find_module_file(moddir, name).with_context(|| {
        format!(
            "module {name} is neither built in nor in {}",
            moddir.display()
        )
    })?;
    let bytes = module_bytes(&file)?;
    for dep in modinfo_depends(&bytes) {
        collect_module(moddir, &dep, out, order, depth + 1)?;
    }
    fs::write(out.join(format!("{n}.ko")), &bytes)?;
    order.push(n);
    Ok(())
}

// --- rstmon ------------------------------------------------------------------------------------

fn build_rstmon(root: &Path, no_build: bool) -> Result<PathBuf> {
    let bin = root.join("target/release/rstmon");
    if no_build {
        step(&format!("rstmon: using {} (--no-build)", bin.display()));
    } else {
        step("rstmon: cargo build --release -p rst-user");
        let t = Instant::now();
        run(
            Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(root)
                .args(["build", "--release", "-p", "rst-user"]),
        )?;
        step(&format!(
            "rstmon: built in {:.0} s",
            t.elapsed().as_secs_f64()
        ));
    }
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    Ok(bin)
}

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
fn build_rootfs(root: &Path, rootfs: &Path, rstmon: &Path, kernel: &Kernel) -> Result<usize> {
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
fn write_initramfs(rootfs: &Path, out: &Path) -> Result<u64> {
    let f = io::BufWriter::new(fs::File::create(out)?);
    let mut c = Cpio::new(f);
    c.add_tree(rootfs, rootfs)?;
    c.entry("dev/console", S_IFCHR | 0o600, (5, 1), &[])?;
    let written = c.written;
    c.finish()?;
    Ok(written)
}

// --- qemu --------------------------------------------------------------------------------------

enum Exit {
    /// qemu exited by itself (the guest powered off, or the kernel panicked: panic=-1
    /// with -no-reboot).
    Exited(std::process::ExitStatus),
    TimedOut,
}

fn boot(
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

// --- the console log ---------------------------------------------------------------------------

/// What one guest run printed, split by the `@@` markers of tests/vm/init.
#[derive(Debug, Default)]
struct GuestReport {
    release: Option<String>,
    /// Guest uptime (s) when /init started, i.e. the kernel's boot time.
    begin: Option<f64>,
    /// Output of each step, in order.
    steps: Vec<(String, Vec<String>)>,
    /// Exit codes by step.
    rcs: BTreeMap<String, i32>,
    /// Guest uptime at the start and at the end of each step.
    times: BTreeMap<String, (f64, Option<f64>)>,
    /// Metric lines printed by the run step.
    metrics: Vec<String>,
    ended: bool,
}

impl GuestReport {
    fn parse(log: &str) -> Self {
        let mut r = Self::default();
        let mut in_metrics = false;
        for raw in log.lines() {
            let plain = strip_ansi(raw);
            let line = plain.trim_end_matches('\r');
            let uptime = |w: Option<&str>| w.and_then(|t| t.parse::<f64>().ok());
            if let Some(rest) = line.strip_prefix("@@vm begin ") {
                let mut it = rest.split_whitespace();
                r.release = it.next().map(String::from);
                r.begin = uptime(it.next());
            } else if line.starts_with("@@vm end") {
                r.ended = true;
            } else if let Some(rest) = line.strip_prefix("@@step ") {
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap_or_default().to_string();
                if let Some(t) = uptime(it.next()) {
                    r.times.insert(name.clone(), (t, None));
                }
                r.steps.push((name, Vec::new()));
            } else if let Some(rest) = line.strip_prefix("@@rc ") {
                let mut it = rest.split_whitespace();
                if let (Some(name), Some(code)) = (it.next(), it.next()) {
                    r.rcs
                        .insert(name.to_string(), code.parse().unwrap_or(i32::MIN));
                    if let (Some(t), Some(span)) = (uptime(it.next()), r.times.get_mut(name)) {
                        span.1 = Some(t);
                    }
                }
            } else if line == "@@metrics begin" {
                in_metrics = true;
            } else if line == "@@metrics end" {
                in_metrics = false;
            } else if in_metrics {
                r.metrics.push(line.to_string());
            } else if let Some((_, out)) = r.steps.last_mut() {
                out.push(line.to_string());
            }
        }
        r
    }

    /// How long a step took in the guest, seconds.
    fn duration(&self, step: &str) -> Option<f64> {
        let (a, b) = self.times.get(step)?;
        Some(b.as_ref()? - a)
    }

    fn output(&self, step: &str) -> &[String] {
        self.steps
            .iter()
            .find(|(n, _)| n == step)
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[])
    }

    /// The selftest table rows: (id, family, side, expected, observed, verdict).
    fn selftest_rows(&self) -> Vec<SelftestRow> {
        self.output("selftest")
            .iter()
            .filter_map(|l| SelftestRow::parse(l))
            .collect()
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`; rstmon's log lines have them).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SelftestRow {
    id: String,
    family: String,
    side: String,
    expected: String,
    observed: String,
    ok: bool,
}

impl SelftestRow {
    fn parse(line: &str) -> Option<Self> {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 6
            || !w[0].starts_with('S')
            || !matches!(w[1], "ipv4" | "ipv6")
            || !matches!(w[2], "sender" | "receiver")
        {
            return None;
        }
        Some(Self {
            id: w[0].into(),
            family: w[1].into(),
            side: w[2].into(),
            expected: w[3].into(),
            observed: w[4].into(),
            ok: w[5] == "ok",
        })
    }
}

/// Sender rows a kernel without the `reason` field cannot match, and what it shows
/// instead (docs/compatibility.md): on 6.1 `tcp_v4/v6_send_reset` trace only full
/// sockets, so resets sent without a socket (S1, S5, S6) or by a time-wait mini-socket
/// (S4) never fire tcp_send_reset; and without a reason S3 (close with unread data)
/// cannot be told from other active resets.
fn known_limit(series: &Series, row: &SelftestRow) -> Option<&'static str> {
    if series.has_reason || row.side != "sender" {
        return None;
    }
    match (row.id.as_str(), row.observed.as_str()) {
        ("S1" | "S5" | "S6", "(none)") => Some("no tcp_send_reset without a socket on 6.1"),
        ("S3", "other") => Some("TCP_ABORT_ON_CLOSE needs the reason field (6.10+)"),
        ("S4", "(none)") => Some("time-wait resets do not fire tcp_send_reset on 6.1"),
        _ => None,
    }
}

/// Compares a guest run with what `series` must do; returns the problems.
fn evaluate(series: &Series, r: &GuestReport) -> Vec<String> {
    let mut bad = Vec::new();
    if r.release.is_none() {
        bad.push("the guest never ran /init (see the console log)".into());
        return bad;
    }
    if !r.ended {
        bad.push("the guest did not reach the end of /init".into());
    }
    for s in ["modules", "check", "run"] {
        match r.rcs.get(s) {
            Some(0) => {}
            Some(c) => bad.push(format!("{s} exited {c}")),
            None => bad.push(format!("{s} did not finish")),
        }
    }
    let check = r.output("check");
    let reasons = check
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some("reasons"));
    match (series.has_reason, reasons.map(|l| l.starts_with("ok"))) {
        (true, Some(true)) | (false, Some(false)) => {}
        (_, None) => bad.push("check printed no `reasons` line".into()),
        (true, Some(false)) => bad.push("check: reasons not supported on a 6.10+ kernel".into()),
        (false, Some(true)) => bad.push("check: reasons claimed on a kernel without them".into()),
    }
    if let Some(l) = check.iter().find(|l| l.starts_with("FAIL")) {
        bad.push(format!("check: {l}"));
    }
    let rows = r.selftest_rows();
    if rows.len() != 28 {
        bad.push(format!("selftest printed {} rows, not 28", rows.len()));
    }
    for row in rows.iter().filter(|r| !r.ok) {
        if known_limit(series, row).is_none() {
            bad.push(format!(
                "selftest {} {} {}: expected {}, observed {}",
                row.id, row.family, row.side, row.expected, row.observed
            ));
        }
    }
    match r.rcs.get("selftest") {
        None => bad.push("selftest did not finish".into()),
        Some(0) => {}
        Some(c) if rows.iter().any(|r| !r.ok) && *c == 1 => {}
        Some(c) => bad.push(format!("selftest exited {c}")),
    }
    let has = |prefix: &str, needle: &str| {
        r.metrics
            .iter()
            .any(|m| m.starts_with(prefix) && m.contains(needle) && !m.ends_with(" 0"))
    };
    if !has("rstmon_xdp_attached", "interface=\"vm0\"") {
        bad.push("run: rstmon_xdp_attached{interface=\"vm0\"} is not 1".into());
    }
    if !has("rstmon_wire_resets_total", "interface=\"vm0\"") {
        bad.push("run: no wire reset counted on vm0".into());
    }
    if !has("rstmon_resets_received_total", "cause=\"refused\"") {
        bad.push("run: no refused reset counted on the receiver side".into());
    }
    bad
}

// --- the tier ----------------------------------------------------------------------------------

struct Outcome {
    label: &'static str,
    package: String,
    elapsed: Duration,
    problems: Vec<String>,
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
    })
}

fn print_report(series: &Series, kernel: &Kernel, r: &GuestReport, elapsed: Duration) {
    let mut o = io::stdout().lock();
    let _ = writeln!(
        o,
        "\n=== {} ({}, guest release {}): {:.0} s in qemu, /init started {} ===",
        series.label,
        kernel.package,
        r.release.as_deref().unwrap_or("?"),
        elapsed.as_secs_f64(),
        r.begin
            .map_or("never".to_string(), |b| format!("{b:.1} s after boot"))
    );
    for (name, lines) in &r.steps {
        let rc = r
            .rcs
            .get(name)
            .map_or("did not finish".to_string(), |c| format!("exit {c}"));
        let took = r
            .duration(name)
            .map(|d| format!(", {d:.1} s"))
            .unwrap_or_default();
        let _ = writeln!(o, "--- {name} ({rc}{took})");
        let shown: Vec<&String> = match name.as_str() {
            // The table and its summary; progress logging goes to the console log.
            "selftest" => lines
                .iter()
                .filter(|l| {
                    SelftestRow::parse(l).is_some()
                        || l.starts_with("id ")
                        || l.contains(" rows: ")
                        || l.starts_with("rstmon")
                })
                .collect(),
            _ => lines.iter().collect(),
        };
        for l in shown {
            let note = SelftestRow::parse(l)
                .filter(|row| !row.ok)
                .and_then(|row| known_limit(series, &row))
                .map(|n| format!("   (expected here: {n})"))
                .unwrap_or_default();
            let _ = writeln!(o, "{l}{note}");
        }
        if name == "run" {
            for m in &r.metrics {
                let _ = writeln!(o, "  {m}");
            }
        }
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
                "vm {:<5} FAILED  {:>4.0} s  {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_cloud_image() {
        let names = "linux-image-6.1.0-9-cloud-amd64\nlinux-image-6.1.0-56-cloud-amd64\n\
                     linux-image-6.1.0-56-cloud-amd64-unsigned\nlinux-image-6.1.0-47-cloud-amd64\n\
                     linux-image-6.1.0-56-amd64\nlinux-image-6.12.117+deb12-cloud-amd64\n\
                     linux-image-6.12.99+deb12-cloud-amd64\nlinux-image-6.12.117+deb12-cloud-amd64-dbg\n\
                     linux-image-6.12-cloud-amd64\n";
        assert_eq!(
            newest_package(&SERIES[0], names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest_package(&SERIES[1], names).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            newest_package(&SERIES[1], "linux-image-6.12-cloud-amd64"),
            None
        );
    }

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
    fn modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=nf_conntrack,libcrc32c\0vermagic=6.1\0";
        assert_eq!(modinfo_depends(ko), vec!["nf_conntrack", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0name=veth\0").is_empty());
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

    #[test]
    fn console_log() {
        let log = "boot noise\r\n@@vm begin 6.1.0-56-cloud-amd64 1.50\n@@step check 1.60\n\
                   ok    kernel        x\nwarn  reasons       no reason field\n@@rc check 0 3.85\n\
                   @@step selftest\nid  fam   side      expected           observed           verdict\n\
                   S1  ipv4  sender    no_listener        (none)             MISMATCH\n\
                   S1  ipv4  receiver  refused            refused            ok\n@@rc selftest 1\n\
                   @@step run\n@@metrics begin\nrstmon_xdp_attached{interface=\"vm0\",mode=\"native\"} 1\n\
                   @@metrics end\n@@rc run 0\n@@vm end\n";
        let r = GuestReport::parse(log);
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.begin, Some(1.5));
        assert!((r.duration("check").unwrap() - 2.25).abs() < 1e-9);
        assert_eq!(r.duration("selftest"), None);
        assert!(r.ended);
        assert_eq!(r.rcs["check"], 0);
        assert_eq!(r.rcs["selftest"], 1);
        let rows = r.selftest_rows();
        assert_eq!(rows.len(), 2);
        assert!(!rows[0].ok && rows[1].ok);
        assert!(known_limit(&SERIES[0], &rows[0]).is_some());
        assert!(known_limit(&SERIES[1], &rows[0]).is_none());
        assert_eq!(r.metrics.len(), 1);
        assert_eq!(
            strip_ansi("\x1b[2m2026\x1b[0m \x1b[33m WARN\x1b[0m x"),
            "2026  WARN x"
        );
    }
}
