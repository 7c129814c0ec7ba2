//! The system tools the tests look at: `ip link` (is an XDP program attached?),
//! `promtool` (does the exposition pass `promtool check metrics`?) and the other tools
//! `cargo xtask setup` installs ([`tool`]).

use std::path::{Path, PathBuf};

use rst_user::netns::Ns;

/// The program shown by `ip -n NS link show IF` on the XDP line, if one is attached
/// (`None` when the interface has no XDP program).
pub fn xdp_attachment(ns: &Ns, iface: &str) -> Option<String> {
    let out = ns
        .output("ip", &["link", "show", "dev", iface])
        .unwrap_or_else(|e| panic!("ip link show {iface}: {e}"));
    assert!(
        out.status.success(),
        "ip link show {iface} in {}: {}",
        ns.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("xdp").then_some(text)
}

/// Whether a TCP socket listens on `addr` inside `ns` (`ss -Hltn src ADDR`): a readiness
/// check that, unlike a connect, makes no RST while nothing listens yet.
pub fn listening(ns: &Ns, addr: std::net::SocketAddr) -> bool {
    let out = ns
        .output("ss", &["-Hltn", "src", &addr.to_string()])
        .unwrap_or_else(|e| panic!("ss -ltn in {}: {e}", ns.name));
    out.status.success() && !out.stdout.trim_ascii().is_empty()
}

/// `promtool`: $RSTMON_PROMTOOL (set by `cargo xtask test`), else the first on PATH.
pub fn promtool() -> PathBuf {
    tool("RSTMON_PROMTOOL", "promtool")
}

/// Runs `promtool check metrics` on an exposition: `Err` with promtool's report and the
/// text when it fails or finds anything.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let promtool = promtool();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", promtool.display()))?;
    child
        .stdin
        .take()
        .ok_or("promtool's stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing the scrape to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && report.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}\n{report}\n--- scrape ---\n{text}",
            out.status
        ))
    }
}

/// A tool the tests run: the path in `$var` (`cargo xtask test` sets RSTMON_PROMTOOL,
/// RSTMON_PROMETHEUS, RSTMON_HADOLINT, RSTMON_KUBERNETES_VALIDATE to what `cargo xtask
/// setup` installed), else `name` on PATH (or in /usr/sbin, /sbin); panics saying how to
/// get it.
pub fn tool(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{var}={} does not exist; run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: {var} is unset and no {name} is on PATH; run `cargo xtask \
                 setup` (it installs the test tools, target/tools/...) and test with `cargo \
                 xtask test`, or set {var}"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
