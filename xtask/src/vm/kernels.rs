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
    setup::{apt, apt_download_with},
    util::{output, run, step},
};

/// Modules the guest needs when the kernel has them as modules: veth (the pairs of
/// selftest and of the XDP check), and sch_ingress (the `clsact` qdisc) with cls_bpf for
/// TC programs on kernels without tcx links (before 6.6).
const GUEST_MODULES: [&str; 3] = ["veth", "sch_ingress", "cls_bpf"];

/// What a complete cache entry's marker holds: the modules it was made for, so that a
/// change of [`GUEST_MODULES`] unpacks the kernel again.
fn cache_marker() -> String {
    GUEST_MODULES.join(",")
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

fn apt_package_names(series: &Series, opts: &[String]) -> String {
    output(
        Command::new("apt-cache")
            .args(opts)
            .args(["pkgnames", series.prefix]),
    )
    .unwrap_or_default()
}

/// Where the system's apt takes Debian's main archive from, and its keyring: the first
/// `deb` entry of the system's sources (deb822 `.sources` or one-line `.list`) that
/// serves the `main` component of a suite that is not a security or updates suite.
fn system_debian_source(files: &[(String, String)]) -> Option<(String, Option<String>)> {
    for (name, text) in files {
        if name.ends_with(".sources") {
            for stanza in text.split("\n\n") {
                let field = |key: &str| {
                    stanza.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        (k.trim().eq_ignore_ascii_case(key)).then(|| v.trim().to_string())
                    })
                };
                let (Some(types), Some(uris), Some(suites), Some(comps)) = (
                    field("Types"),
                    field("URIs"),
                    field("Suites"),
                    field("Components"),
                ) else {
                    continue;
                };
                if field("Enabled").is_some_and(|e| e == "no")
                    || !types.split_whitespace().any(|t| t == "deb")
                    || !comps.split_whitespace().any(|c| c == "main")
                    || !suites.split_whitespace().any(|s| !s.contains('-'))
                {
                    continue;
                }
                let uri = uris.split_whitespace().next()?.to_string();
                return Some((uri, field("Signed-By")));
            }
        } else if name.ends_with(".list") || name == "sources.list" {
            for l in text.lines().map(str::trim) {
                let Some(rest) = l.strip_prefix("deb ") else {
                    continue;
                };
                let (opts, rest) = match rest.trim_start().strip_prefix('[') {
                    Some(r) => r.split_once(']').unwrap_or(("", r)),
                    None => ("", rest),
                };
                let w: Vec<&str> = rest.split_whitespace().collect();
                if w.len() >= 3 && !w[1].contains('-') && w[2..].contains(&"main") {
                    let signed = opts
                        .split_whitespace()
                        .find_map(|o| o.strip_prefix("signed-by="))
                        .map(String::from);
                    return Some((w[0].to_string(), signed));
                }
            }
        }
    }
    None
}

fn read_system_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        files.push(("sources.list".to_string(), t));
    }
    let mut parts: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    parts.sort();
    for p in parts {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if let Ok(t) = fs::read_to_string(&p) {
            files.push((name, t));
        }
    }
    files
}

/// apt options that point apt-get and apt-cache at the package lists `series` comes
/// from: none for the system's own sources; for another suite (bullseye for 5.10) a
/// source list of its own in target/vm/apt/<suite>/, on the mirror and keyring of the
/// system's Debian source, with its own lists and cache. The system's apt
/// configuration, lists and cache are left as they are.
fn apt_options(series: &Series, vm_dir: &Path) -> Result<Vec<String>> {
    let Some(suite) = series.suite else {
        return Ok(Vec::new());
    };
    let dir = vm_dir.join("apt").join(suite);
    let list = dir.join("sources.list");
    if !list.exists() {
        let (uri, keyring) = system_debian_source(&read_system_sources()).context(
            "no Debian `main` source in /etc/apt/sources.list(.d): cannot tell where to \
             take the kernel's suite from",
        )?;
        let signed = keyring
            .map(|k| format!("[signed-by={k}] "))
            .unwrap_or_default();
        fs::create_dir_all(dir.join("lists/partial"))?;
        fs::create_dir_all(dir.join("cache/archives/partial"))?;
        fs::write(&list, format!("deb {signed}{uri} {suite} main\n"))?;
        step(&format!(
            "kernel {}: apt source of its own for Debian {suite} in {} ({uri}; the \
             system's apt sources are not changed)",
            series.label,
            list.display()
        ));
    }
    let opt = |k: &str, v: &Path| ["-o".to_string(), format!("{k}={}", v.display())];
    Ok([
        opt("Dir::Etc::sourcelist", &list),
        opt("Dir::Etc::sourceparts", Path::new("-")),
        opt("Dir::State::Lists", &dir.join("lists")),
        opt("Dir::Cache", &dir.join("cache")),
    ]
    .concat())
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
    let opts = apt_options(series, vm_dir)?;
    let mut names = apt_package_names(series, &opts);
    if newest_package(series, &names).is_none() {
        step(&format!(
            "kernel {}: no {}* package in apt's lists{}; apt-get update",
            series.label,
            series.prefix,
            series
                .suite
                .map(|s| format!(" of Debian {s}"))
                .unwrap_or_default()
        ));
        let mut update = apt(&[]);
        let _ = update.args(&opts).args(["update", "-qq"]).status();
        names = apt_package_names(series, &opts);
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
    if fs::read_to_string(dir.join(CACHE_DONE)).is_ok_and(|m| m == cache_marker()) {
        step(&format!(
            "kernel {}: {package} (cached in target/vm/kernels)",
            series.label
        ));
        return load_cached(&dir, &package);
    }
    step(&format!(
        "kernel {}: downloading {package} (apt-get download, 20-30 MB)",
        series.label
    ));
    let dl = kernels.join("dl");
    let deb = apt_download_with(&package, &dl, &opts)?;
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
    fs::write(dir.join(CACHE_DONE), cache_marker())?;
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
            newest_package(&SERIES[1], names).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            newest_package(&SERIES[2], names).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            newest_package(&SERIES[2], "linux-image-6.12-cloud-amd64"),
            None
        );
        assert_eq!(newest_package(&SERIES[0], names), None);
    }

    /// Debian 11's names (`apt-cache pkgnames linux-image-5.10.0-` on bullseye's lists):
    /// only the plain cloud image counts, by its ABI number.
    #[test]
    fn bullseye_package_names() {
        let names = "linux-image-5.10.0-30-amd64\nlinux-image-5.10.0-30-cloud-amd64\n\
                     linux-image-5.10.0-30-cloud-amd64-dbg\nlinux-image-5.10.0-32-cloud-amd64\n\
                     linux-image-5.10.0-32-cloud-amd64-unsigned\nlinux-image-5.10.0-32-rt-amd64\n\
                     linux-image-5.10.0-9-cloud-amd64\nlinux-image-5.10.0-32-cloud-amd64-dbg\n";
        let s = &SERIES[0];
        assert_eq!(
            package_number(s, "linux-image-5.10.0-32-cloud-amd64"),
            Some(32)
        );
        assert_eq!(
            package_number(s, "linux-image-5.10.0-32-cloud-amd64-dbg"),
            None
        );
        assert_eq!(package_number(s, "linux-image-5.10.0-32-rt-amd64"), None);
        assert_eq!(package_number(s, "linux-image-6.1.0-32-cloud-amd64"), None);
        assert_eq!(
            newest_package(s, names).as_deref(),
            Some("linux-image-5.10.0-32-cloud-amd64")
        );
        // Not confused with the other series.
        assert_eq!(newest_package(&SERIES[1], names), None);
    }

    #[test]
    fn system_debian_source_of_deb822_and_one_line_lists() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\
                      Components: main\n";
        let security_first = "Types: deb\nURIs: http://mirror.example/debian-security\n\
                              Suites: bookworm-security\nComponents: main\n\n\
                              Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\
                              Components: main\n\n\
                              Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\
                              Components: main contrib\n";
        let one_line = "# comment\ndeb http://sec.example/debian-security bookworm-security main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        let f = |n: &str, t: &str| vec![(n.to_string(), t.to_string())];
        assert_eq!(
            system_debian_source(&f("debian.sources", deb822)),
            Some((
                "http://mirror.example/debian".into(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".into())
            ))
        );
        assert_eq!(
            system_debian_source(&f("debian.sources", security_first)),
            Some(("http://mirror.example/debian".into(), None))
        );
        assert_eq!(
            system_debian_source(&f("sources.list", one_line)),
            Some(("http://mirror.example/debian".into(), Some("/k.gpg".into())))
        );
        assert_eq!(
            system_debian_source(&f("x.list", "deb-src http://a b main\n")),
            None
        );
        assert_eq!(system_debian_source(&f("x.disabled", one_line)), None);
    }

    #[test]
    fn modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=nf_conntrack,libcrc32c\0vermagic=6.1\0";
        assert_eq!(modinfo_depends(ko), vec!["nf_conntrack", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0name=veth\0").is_empty());
    }
}
