//! The Debian cloud kernels the guests boot: finding the newest package of a series,
//! downloading and unpacking it into target/vm/kernels, and picking out the modules the
//! guest needs (with their dependencies, decompressed).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::Series;
use crate::{
    setup::{apt, apt_download},
    util::{output, run, step},
};

/// Module the guest needs when the kernel has it as a module (veth pairs for selftest
/// and for the XDP check).
const GUEST_MODULES: [&str; 1] = ["veth"];

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
pub(super) struct Kernel {
    pub(super) package: String,
    pub(super) vmlinuz: PathBuf,
    pub(super) modules: Vec<PathBuf>,
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
pub(super) fn ensure_kernel(series: &Series, vm_dir: &Path) -> Result<Kernel> {
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
    let deb = apt_download(&package, &dl)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::SERIES;

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
    fn modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=nf_conntrack,libcrc32c\0vermagic=6.1\0";
        assert_eq!(modinfo_depends(ko), vec!["nf_conntrack", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0name=veth\0").is_empty());
    }
}
