//! Writes rstmon's man pages (clap_mangen) and shell completions (clap_complete) from
//! the clap definitions of the binary, for the Debian package:
//!
//! ```text
//! gen-docs OUT_DIR   ->  OUT_DIR/man/rstmon.1, rstmon-run.1, ...
//!                        OUT_DIR/completions/rstmon.bash, _rstmon, rstmon.fish
//! ```
//!
//! `cargo xtask deb` runs it; `rst-user/tests/packaging.rs` checks what the package holds.

use std::{fs, io, path::Path, process::ExitCode};

use clap::CommandFactory as _;
use clap_complete::Shell;
use rst_user::cli::args::Cli;

fn write(out: &Path) -> io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    fs::write(man.join("rstmon.1"), page)?;
    // One page per subcommand (`man rstmon-run`), named as clap_mangen's SEE ALSO does.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("rstmon-{}", sub.get_name());
        // clap names are `&'static str`; this program runs once and exits.
        let static_name: &'static str = name.clone().leak();
        let sub = sub
            .clone()
            .name(static_name)
            .bin_name(name.replace('-', " "))
            .version(env!("CARGO_PKG_VERSION"));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page)?;
        fs::write(man.join(format!("{name}.1")), page)?;
    }
    for (shell, file) in [
        (Shell::Bash, "rstmon.bash"),
        (Shell::Zsh, "_rstmon"),
        (Shell::Fish, "rstmon.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "rstmon", &mut text);
        fs::write(completions.join(file), text)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: gen-docs OUT_DIR");
        return ExitCode::from(2);
    };
    match write(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-docs: {}: {e}", Path::new(&out).display());
            ExitCode::FAILURE
        }
    }
}
