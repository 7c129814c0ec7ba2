//! What ships, checked with the real tools: the Debian package (`cargo xtask deb`,
//! $RSTMON_DEB) installed with `dpkg --root` into a scratch root, its unit verified
//! there; the container recipe linted with hadolint and checked against the binary; the
//! Kubernetes manifests validated against the Kubernetes schemas offline
//! (kubernetes-validate) and against what rstmon needs.
//!
//! Needs root (dpkg, and `rstmon check` of the installed binary loads its programs).

mod common;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    BIN, run_to_exit,
    systemd::{copy_host_targets, security_score, verify},
};
use rst_testkit::tool;
use rst_user::{cli::args::DEFAULT_LISTEN, kernel::caps};
use serde_json::Value;

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn contrib(path: &str) -> PathBuf {
    Path::new(CONTRIB).join(path)
}

/// Runs `program args`; its stdout and stderr, panicking unless it exits 0.
fn ok(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> (String, String) {
    let mut cmd = Command::new(program.as_ref());
    cmd.args(args);
    let what = format!("{} {}", program.as_ref().to_string_lossy(), args.join(" "));
    let out = run_to_exit(cmd, &what);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{what}: {}:\n{so}{se}", out.status);
    (so, se)
}

fn scratch(what: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("rstmon-{what}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).expect("scratch dir");
    p
}

fn deb() -> PathBuf {
    let p = std::env::var_os("RSTMON_DEB").map(PathBuf::from).unwrap_or_else(|| {
        panic!("RSTMON_DEB is unset: build the package with `cargo xtask deb` and set it to target/debian/rstmon_*.deb (`cargo xtask test` does both)")
    });
    assert!(p.is_file(), "RSTMON_DEB={} does not exist", p.display());
    p
}

/// Every file the package must hold (paths as `dpkg-deb -c` prints them, without `./`).
const PACKAGE_FILES: [&str; 16] = [
    "usr/bin/rstmon",
    "lib/systemd/system/rstmon.service",
    "etc/default/rstmon",
    "usr/share/man/man1/rstmon.1.gz",
    "usr/share/man/man1/rstmon-run.1.gz",
    "usr/share/man/man1/rstmon-watch.1.gz",
    "usr/share/man/man1/rstmon-check.1.gz",
    "usr/share/man/man1/rstmon-selftest.1.gz",
    "usr/share/bash-completion/completions/rstmon",
    "usr/share/zsh/vendor-completions/_rstmon",
    "usr/share/fish/vendor_completions.d/rstmon.fish",
    "usr/share/rstmon/prometheus/rstmon-alerts.yml",
    "usr/share/rstmon/prometheus/rstmon-alerts.test.yml",
    "usr/share/rstmon/grafana/rstmon.json",
    "usr/share/doc/rstmon/README.md",
    "usr/share/doc/rstmon/copyright",
];

#[test]
fn deb_installs_into_a_scratch_root_and_its_unit_verifies() {
    let deb = deb();
    let deb_s = deb.to_str().expect("path");
    // The control fields.
    let (fields, _) = ok(
        "dpkg-deb",
        &["-f", deb_s, "Package", "Version", "Architecture", "Depends"],
    );
    println!("{fields}");
    assert!(fields.contains("Package: rstmon"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {VERSION}-1")),
        "{fields}"
    );
    assert!(fields.contains("Depends: libc6"), "{fields}");
    let (conffiles, _) = ok("dpkg-deb", &["-I", deb_s, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/default/rstmon", "conffiles");

    // The contents.
    let (listing, _) = ok("dpkg-deb", &["-c", deb_s]);
    println!("{listing}");
    let files: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.strip_prefix("./"))
        .filter(|p| !p.ends_with('/'))
        .collect();
    for f in PACKAGE_FILES {
        assert!(files.contains(f), "the package lacks {f}:\n{listing}");
    }

    // Installed into a root of its own: dpkg's database there is empty, so libc6 is
    // "missing" (--force-depends); there are no maintainer scripts to run.
    let root = scratch("dpkg-root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(d)).expect("dpkg dirs");
    }
    fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    let root_arg = format!("--root={}", root.display());
    ok(
        "dpkg",
        &[&root_arg, "--force-depends", "--log=/dev/null", "-i", deb_s],
    );
    let (status, _) = ok("dpkg", &[&root_arg, "-s", "rstmon"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    for f in PACKAGE_FILES {
        assert!(root.join(f).is_file(), "{f} not installed");
    }

    // The installed binary runs, and loads and attaches (it is stripped).
    let bin = root.join("usr/bin/rstmon");
    let (v, _) = ok(&bin, &["--version"]);
    assert!(v.contains(VERSION), "--version: {v}");
    let (check, _) = ok(&bin, &["check"]);
    assert!(check.contains("tracing hooks attach"), "{check}");
    // The man page is a man page of this version; the completions complete rstmon.
    let (page, _) = ok(
        "sh",
        &[
            "-c",
            &format!(
                "gzip -dc {}",
                root.join("usr/share/man/man1/rstmon.1.gz").display()
            ),
        ],
    );
    assert!(
        page.contains(".TH rstmon 1") && page.contains(VERSION),
        "{page}"
    );
    let (page, _) = ok(
        "sh",
        &[
            "-c",
            &format!(
                "gzip -dc {}",
                root.join("usr/share/man/man1/rstmon-run.1.gz").display()
            ),
        ],
    );
    assert!(
        page.contains("web.listen") && page.contains("interface"),
        "{page}"
    );
    let bash = root.join("usr/share/bash-completion/completions/rstmon");
    let (complete, _) = ok(
        "bash",
        &[
            "-c",
            &format!("source {} && complete -p rstmon", bash.display()),
        ],
    );
    assert!(complete.contains("rstmon"), "bash completion: {complete}");
    let zsh =
        fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_rstmon")).expect("zsh");
    assert!(zsh.starts_with("#compdef rstmon"), "zsh completion");
    let fish = fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/rstmon.fish"))
        .expect("fish");
    assert!(fish.contains("complete -c rstmon"), "fish completion");

    // The installed unit: verify in that root (with the host's targets), and its score.
    copy_host_targets(&root);
    verify(&root).unwrap_or_else(|e| panic!("the installed unit: {e}"));
    let (score, verdict, _) = security_score(&root.join("lib/systemd/system/rstmon.service"));
    println!("installed unit: {score} {verdict}");
    assert!(score <= 3.0 && verdict == "OK", "{score} {verdict}");

    // Purged, it leaves nothing behind.
    ok("dpkg", &[&root_arg, "--log=/dev/null", "--purge", "rstmon"]);
    for f in PACKAGE_FILES {
        assert!(!root.join(f).exists(), "{f} left after --purge");
    }
    let _ = fs::remove_dir_all(&root);
}

// ---- the container recipe ----

/// hadolint finds nothing (at any level); the image is distroless or scratch, runs the
/// binary `cargo build --release` makes, exposes the default port, and the binary needs
/// no library and no glibc newer than distroless/cc-debian12 has (2.36).
#[test]
fn dockerfile_lints_clean_and_fits_the_binary() {
    let hadolint = tool("RSTMON_HADOLINT", "hadolint");
    let dockerfile = contrib("container/Dockerfile");
    let df = dockerfile.to_str().expect("path");
    let (out, err) = ok(&hadolint, &["--failure-threshold", "info", df]);
    assert!(
        out.trim().is_empty() && err.trim().is_empty(),
        "hadolint: {out}{err}"
    );
    // The linter is not vacuous: a Dockerfile with classic mistakes fails.
    let bad = scratch("dockerfile");
    fs::write(
        bad.join("Dockerfile"),
        "FROM debian\nRUN apt-get update && apt-get install -y curl\nWORKDIR tmp\n",
    )
    .expect("write");
    let mut cmd = Command::new(&hadolint);
    cmd.arg(bad.join("Dockerfile"));
    let r = run_to_exit(cmd, "hadolint on a bad Dockerfile");
    let _ = fs::remove_dir_all(&bad);
    assert!(!r.status.success(), "hadolint accepted a bad Dockerfile");

    let text = fs::read_to_string(&dockerfile).expect("Dockerfile");
    let instr = |name: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map(str::to_string)
            .collect()
    };
    let from = instr("FROM");
    assert_eq!(from.len(), 1, "one stage");
    assert!(
        from[0].starts_with("gcr.io/distroless/cc-debian12") || from[0] == "scratch",
        "FROM {}",
        from[0]
    );
    assert_eq!(instr("COPY"), ["target/release/rstmon /usr/bin/rstmon"]);
    assert_eq!(instr("ENTRYPOINT"), [r#"["/usr/bin/rstmon"]"#]);
    assert_eq!(
        instr("EXPOSE"),
        [DEFAULT_LISTEN.rsplit(':').next().expect("port")]
    );
    // The default command parses.
    let cmd: Vec<String> = serde_json::from_str(&instr("CMD")[0]).expect("CMD is JSON");
    let mut check = cmd.clone();
    check.push("--help".into());
    let args: Vec<&str> = check.iter().map(String::as_str).collect();
    ok(BIN, &args);

    // What the binary needs from the image: libraries and glibc symbol versions.
    let (dynamic, _) = ok("readelf", &["-d", BIN]);
    let needed: BTreeSet<String> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect();
    println!("NEEDED: {needed:?}");
    let in_image = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
    ];
    for lib in &needed {
        assert!(
            in_image.contains(&lib.as_str()),
            "the binary needs {lib}, which distroless/cc lacks"
        );
    }
    let (versions, _) = ok("readelf", &["-V", "--wide", BIN]);
    let newest = versions
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("glibc versions");
    println!("newest glibc symbol version: {}.{}", newest.0, newest.1);
    assert!(
        newest <= (2, 36),
        "needs glibc {newest:?}, the image has 2.36"
    );
}

// ---- Kubernetes ----

/// The YAML documents of `file` as JSON (PyYAML from kubernetes-validate's virtualenv).
fn yaml_docs(file: &Path) -> Vec<Value> {
    let kv = tool("RSTMON_KUBERNETES_VALIDATE", "kubernetes-validate");
    let python = kv.with_file_name("python3");
    let python = if python.exists() {
        python
    } else {
        PathBuf::from("python3")
    };
    let (json, _) = ok(
        &python,
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            file.to_str().expect("path"),
        ],
    );
    serde_json::from_str::<Vec<Value>>(&json).expect("JSON")
}

#[test]
fn kubernetes_manifests_validate_offline_and_match_rstmon() {
    let kv = tool("RSTMON_KUBERNETES_VALIDATE", "kubernetes-validate");
    let ds_file = contrib("kubernetes/daemonset.yaml");
    let sm_file = contrib("kubernetes/servicemonitor.yaml");
    let files = [
        ds_file.to_str().expect("path"),
        sm_file.to_str().expect("path"),
    ];
    let (out, err) = ok(&kv, &["--strict", files[0], files[1]]);
    println!("{out}{err}");
    for (file, kind) in [(files[0], "daemonset/rstmon"), (files[1], "service/rstmon")] {
        assert!(
            out.contains(&format!("{file} passed for resource {kind}")),
            "{kind} not validated:\n{out}{err}"
        );
    }
    // The validator is not vacuous: an unknown field and a wrong type fail.
    let bad = scratch("k8s");
    let text = fs::read_to_string(&ds_file).expect("daemonset");
    let broken = text
        .replace("hostNetwork: true", "hostNetwork: \"yes\"")
        .replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n            readOnlyRoot: true",
        );
    fs::write(bad.join("ds.yaml"), broken).expect("write");
    let mut cmd = Command::new(&kv);
    cmd.arg("--strict").arg(bad.join("ds.yaml"));
    let r = run_to_exit(cmd, "kubernetes-validate on a broken DaemonSet");
    let _ = fs::remove_dir_all(&bad);
    assert!(
        !r.status.success(),
        "kubernetes-validate accepted a broken DaemonSet"
    );

    // What rstmon needs, and nothing more.
    let ds = &yaml_docs(&ds_file)[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "hostNetwork");
    assert!(
        pod["hostPID"].is_null() || pod["hostPID"] == false,
        "hostPID"
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .expect("add")
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().expect("cap")))
        .collect();
    let want: BTreeSet<String> = caps::DAEMON_CAPS
        .iter()
        .map(|(c, _)| caps::cap_name(*c).to_string())
        .collect();
    assert_eq!(added, want, "capabilities added");
    let mounts: Vec<(&str, bool)> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().expect("path"),
                m["readOnly"] == true,
            )
        })
        .collect();
    assert!(mounts.contains(&("/sys/kernel/btf", true)), "{mounts:?}");
    // The arguments parse, and the port everything names is the one it listens on.
    let mut args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg").to_string())
        .collect();
    let listen = args
        .iter()
        .skip_while(|a| *a != "--web.listen-address")
        .nth(1)
        .expect("--web.listen-address")
        .clone();
    let port = listen.rsplit(':').next().expect("port").to_string();
    args.push("--help".into());
    ok(BIN, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(c["ports"][0]["containerPort"].to_string(), port);
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port.as_str());
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    // The probes ask what rstmon answers (tests/web.rs): ready once attached, healthy
    // while it serves.
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"],
        rst_user::export::server::READY_PATH
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"],
        rst_user::export::server::HEALTHY_PATH
    );

    // The ServiceMonitor (a CRD: not in the Kubernetes schemas) scrapes the Service,
    // which selects the DaemonSet's pods.
    let docs = yaml_docs(&sm_file);
    let svc = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("Service");
    let sm = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], svc["spec"]["ports"][0]["name"]);
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"].to_string(), port);
    assert_eq!(svc["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(sm["metadata"]["namespace"], ds["metadata"]["namespace"]);
}
