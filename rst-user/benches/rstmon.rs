//! Benchmarks: see docs/performance.md. Run with `cargo xtask bench`.
fn main() {
    eprintln!("benchmarks not written yet");
    std::process::exit(1);
}
