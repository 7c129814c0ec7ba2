//! Builds the eBPF object (`rst-ebpf`) with aya-build into OUT_DIR.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or_else(|| anyhow!("rst-user has no parent directory"))?
        .join("rst-ebpf");
    let root_dir = metadata_root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", metadata_root.display()))?;
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // Host-only builds (clippy, docs): an empty placeholder keeps include_bytes working;
        // loading it fails at run time with a clear message.
        let out = PathBuf::from(env::var("OUT_DIR")?).join("rst-ebpf");
        if !out.exists() {
            fs::write(&out, b"").context("writing the placeholder eBPF object")?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let package = aya_build::Package {
        name: "rst-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).context(
        "building the eBPF object (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}
