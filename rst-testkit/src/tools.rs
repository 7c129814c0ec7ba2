//! The system tools the tests look at: `ip link` (is an XDP program attached?) and
//! `promtool` (does the exposition pass `promtool check metrics`?).

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

/// `promtool`: $RSTMON_PROMTOOL (set by `cargo xtask test`), else the first on PATH.
pub fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("RSTMON_PROMTOOL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RSTMON_PROMTOOL={} does not exist; run `cargo xtask setup`",
            p.display()
        );
        return p;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("promtool"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: RSTMON_PROMTOOL is unset and no promtool is on PATH; \
                 run `cargo xtask setup` (it installs target/tools/promtool) and test with \
                 `cargo xtask test`, or set RSTMON_PROMTOOL"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
