//! rstmon benchmarks: `cargo xtask bench` (as root), or
//! `cargo bench -p rst-user --bench rstmon -- [--quick] [--only P1,P2,P3,P4,P5,P6,P7,E1,E2] [--no-write]`.
//!
//! Prints one table and, after a full run, writes it with the date, kernel and CPU into
//! `docs/performance.md`, below the hand-written method (see [`RESULTS_MARKER`]). Every
//! measurement is interleaved with its baseline in the same run (A B A B…, alternating
//! the order), at least five rounds, and reported as median (min–max). Progress goes to
//! stderr.
//!
//! One module per benchmark ([`p1`]–[`p7`], [`egress`] for E1 and E2, the TC egress
//! program in P1's and P2's style); [`drainer`] is the sink they share, [`ext`]
//! the external programs they run (node_exporter, bpftrace), [`stats`] and [`report`]
//! turn measurements into the table. Loading, the traffic generator, the daemon guard,
//! scraping and network plumbing are `rst_testkit`'s.

mod drainer;
mod egress;
mod ext;
mod p1;
mod p2;
mod p3;
mod p4;
mod p5;
mod p6;
mod p7;
mod report;
mod stats;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    p1::p1,
    p2::p2,
    p3::p3,
    p4::p4,
    p5::p5,
    p6::p6,
    p7::p7,
    report::{cpu_model, table, today},
};

/// The daemon's own setting (`rstmon run`): a forced wakeup per 64 KiB of samples.
const WAKEUP_BYTES: u32 = rst_testkit::loader::WAKEUP_BYTES;
/// The daemon's default `--max-samples-per-sec`.
const DEFAULT_SAMPLES_PER_SEC: u32 = 20_000;
/// The daemon's default trace sampling rate (`--max-trace-samples-per-sec`).
const DEFAULT_TRACE_SAMPLES_PER_SEC: u32 = rst_user::cli::args::DEFAULT_TRACE_SAMPLES_PER_SEC;
/// CPU that runs the packet path (test_run, generator, softirq).
const CPU_PACKETS: usize = 0;
/// CPU for user space that consumes (drain thread, tcpdump, daemon).
const CPU_CONSUMER: usize = 1;

// --- options, progress ----------------------------------------------------------------------

struct Opts {
    quick: bool,
    only: Option<Vec<String>>,
    write: bool,
}

impl Opts {
    fn parse() -> anyhow::Result<Self> {
        let mut o = Opts {
            quick: false,
            only: None,
            write: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-write" => o.write = false,
                "--only" => {
                    let v = args.next().context("--only needs a list, e.g. P1,P3")?;
                    o.only = Some(v.split(',').map(|s| s.trim().to_uppercase()).collect());
                }
                // cargo bench passes --bench to harness=false targets.
                "--bench" => {}
                "-h" | "--help" => {
                    println!(
                        "usage: rstmon-bench [--quick] [--only P1,P2,P3,P4,P5,P6,P7,E1,E2] [--no-write]\n\
                         Writes docs/performance.md after a full (not --quick, not --only) run."
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other} (try --help)"),
            }
        }
        Ok(o)
    }

    fn wants(&self, id: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|x| x == id))
    }

    fn full(&self) -> bool {
        !self.quick && self.only.is_none()
    }
}

static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn progress(msg: impl AsRef<str>) {
    let t = T0.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {}", msg.as_ref());
}

/// Blocks SIGINT/SIGTERM in every thread and handles them on a dedicated one: children
/// are killed and the namespaces made so far deleted before the process exits.
fn cleanup_on_signal() {
    rst_user::netns::on_interrupt(|| {
        eprintln!("bench: interrupted; stopping children and removing namespaces");
        rst_testkit::process::kill_children();
        rst_user::netns::cleanup_all_and_exit(130);
    });
}

// --- the document --------------------------------------------------------------------------

/// Everything after this line of docs/performance.md is rewritten by a full run; the
/// text above it (method, what each row means) is kept.
const RESULTS_MARKER: &str = "<!-- results: everything below is written by `cargo xtask bench` -->";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("rst-user lives in the workspace")
        .join("docs/performance.md")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let o = Opts::parse()?;
    progress("rstmon benchmarks (docs/performance.md)");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (BPF, network namespaces): run `cargo xtask bench`");
    }
    cleanup_on_signal();
    let stale = rst_user::netns::sweep_stale();
    if stale > 0 {
        progress(format!("removed {stale} namespaces left over by dead runs"));
    }
    ext::preflight(o.wants("P4"), o.wants("P5"))?;
    let load0 = report::HostLoad::now();
    progress(format!("CPU: {}", cpu_model()));
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    if o.wants("P1") {
        rows.extend(p1(&o, &mut notes)?);
    }
    if o.wants("P2") {
        rows.extend(p2(&o, &mut notes)?);
    }
    if o.wants("P3") {
        rows.extend(p3(&o, &mut notes)?);
    }
    if o.wants("P4") {
        rows.extend(p4(&o, &mut notes)?);
    }
    if o.wants("P5") {
        rows.extend(p5(&o, &mut notes)?);
    }
    if o.wants("P6") {
        rows.extend(p6(&o, &mut notes)?);
    }
    if o.wants("P7") {
        rows.extend(p7(&o, &mut notes)?);
    }
    if o.wants("E1") {
        rows.extend(egress::e1(&o, &mut notes)?);
    }
    if o.wants("E2") {
        rows.extend(egress::e2(&o, &mut notes)?);
    }
    let env = format!(
        "{} · Linux {} · {}",
        today(),
        rst_user::kernel::release(),
        cpu_model()
    );
    let others = load0.others_since();
    notes.insert(
        0,
        format!(
            "Host: other jobs (not this benchmark or the processes it started) kept about \
             {:.0} % of the machine's {} CPUs busy during the run (/proc/stat busy time \
             less this process's and its children's CPU time). The spread of a row and \
             its distance from other runs grow with it.",
            others * 100.0,
            rst_user::attach::possible_cpus()
        ),
    );
    let t = table(&rows);
    println!("\n{env}\n\n{t}");
    for n in &notes {
        println!("- {n}");
    }
    let total = T0.get().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    progress(format!("done in {total:.0} s"));
    if o.write && o.full() {
        let path = doc_path();
        let old = fs::read_to_string(&path).unwrap_or_default();
        let mut doc = match old.split_once(RESULTS_MARKER) {
            Some((head, _)) => head.to_string(),
            None if old.is_empty() => "# Performance\n\n".to_string(),
            None => format!("{}\n\n", old.trim_end()),
        };
        let _ = write!(
            doc,
            "{RESULTS_MARKER}\n\n## Results\n\nRun: {env}; whole run {total:.0} s.\n\n{t}\nNotes from this run:\n\n"
        );
        for n in &notes {
            let _ = writeln!(doc, "- {n}");
        }
        fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
        progress(format!("wrote {}", path.display()));
    } else {
        progress("partial or --quick run: docs/performance.md not written");
    }
    Ok(())
}
