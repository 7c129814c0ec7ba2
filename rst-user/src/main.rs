//! rstmon: counts TCP resets at line rate, names the kernel's reason for each one, and
//! exports it to Prometheus. Everything is in the library (`rst_user::cli`).

fn main() -> std::process::ExitCode {
    rst_user::cli::main()
}
