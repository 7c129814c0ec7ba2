//! P6: start-up of `rstmon run -i <one veth>`: from the exec to the first `/metrics`
//! answer (HTTP 200), from the exec to ready (`/-/ready` 200: programs verified and
//! attached, every family exported), and the peak memory by then. The command line is
//! `rstmon --log warn run -i <veth> --web.listen-address 127.0.0.1:9746`.

use std::{
    io,
    net::SocketAddr,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rst_testkit::{get, process::Proc};
use rst_user::netns::Pair;

use crate::{Opts, ext::Guard, progress, report::Row, stats::summarize};

/// Targets: exec → first 200, and VmHWM after it.
const P6_START_MS: f64 = 150.0;
const P6_HWM_MIB: f64 = 24.0;

/// GET `path` from the calling thread's namespace until it answers 200: connection
/// refused (not bound yet) and 503 (`/-/ready` while starting) are retried every
/// 0.5 ms; once the socket is bound the connection is queued and the GET waits for the
/// answer.
fn answered(addr: SocketAddr, path: &str, deadline: Instant) -> io::Result<()> {
    loop {
        let retry = match get(addr, path) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) if r.status == 503 => format!("{path}: HTTP 503"),
            Ok(r) => return Err(io::Error::other(format!("{path}: HTTP {}", r.status))),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(io::Error::other(retry));
        }
        thread::sleep(Duration::from_micros(500));
    }
}

pub fn p6(o: &Opts, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let runs = if o.quick { 3 } else { 11 };
    progress(format!(
        "P6: start-up of `rstmon run -i <veth>`, {runs} runs: exec → first /metrics 200 \
         (target ≤ {P6_START_MS:.0} ms), VmHWM after it (target ≤ {P6_HWM_MIB:.0} MiB)"
    ));
    let pair = Pair::new().context("creating the veth pair")?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 9746));
    let listen_arg = listen.to_string();
    let args = [
        "--log",
        "warn",
        "run",
        "-i",
        &pair.b_if,
        "--web.listen-address",
        &listen_arg,
    ];
    let mut ms = Vec::new();
    let mut ready_ms = Vec::new();
    let mut hwm = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        // Spawned from a thread inside the namespace (the child inherits it), not through
        // `ip netns exec`, whose own set-up would be timed too; rstmon needs nothing
        // else of the namespace.
        let (guard, took, ready) = pair.b.run(|| -> anyhow::Result<(Guard, f64, f64)> {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rstmon"));
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let t0 = Instant::now();
            let g = Guard::spawn(&mut cmd, None, libc::SIGTERM)?;
            let deadline = t0 + Duration::from_secs(30);
            answered(listen, "/metrics", deadline)
                .with_context(|| format!("rstmon did not answer on {listen}"))?;
            let first = t0.elapsed().as_secs_f64() * 1e3;
            answered(listen, "/-/ready", deadline)
                .with_context(|| format!("rstmon was not ready on {listen}"))?;
            Ok((g, first, t0.elapsed().as_secs_f64() * 1e3))
        })??;
        let p = Proc(guard.pid());
        if p.comm() != "rstmon" {
            bail!("PID {} is {:?}, not rstmon", guard.pid(), p.comm());
        }
        let h = p.status_kib("VmHWM:") as f64 / 1024.0;
        let r = p.status_kib("VmRSS:") as f64 / 1024.0;
        drop(guard);
        progress(format!(
            "  run {}/{runs}: first answer after {took:.1} ms, ready after {ready:.1} ms, \
             VmHWM {h:.1} MiB",
            i + 1
        ));
        ms.push(took);
        ready_ms.push(ready);
        hwm.push(h);
        rss.push(r);
    }
    let t = summarize(&ms);
    let r = summarize(&ready_ms);
    let h = summarize(&hwm);
    notes.push(format!(
        "P6: rstmon spawned directly in the namespace (fork from a thread that entered it), \
         timed from just before the spawn to the last byte of the first 200 answer to GET \
         /metrics (served from the start, `rstmon_ready 0` until the programs are \
         attached), then on to the first 200 of /-/ready; every run a fresh process, XDP \
         on one veth, the tracing hooks host-wide. VmRSS once ready: {} MiB.",
        summarize(&rss).fmt(1, "")
    ));
    Ok(vec![
        Row {
            id: "P6",
            measure: "start-up: exec → first /metrics answer (HTTP 200) of `rstmon run -i <veth>`"
                .into(),
            value: t.fmt(1, " ms"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: format!("≤ {P6_START_MS:.0} ms"),
            pass: Some(t.median <= P6_START_MS),
        },
        Row {
            id: "P6",
            measure: "start-up: exec → ready (`/-/ready` 200: every program verified and \
                      attached, every family exported)"
                .into(),
            value: r.fmt(1, " ms"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: "—".into(),
            pass: None,
        },
        Row {
            id: "P6",
            measure: "start-up: peak RSS (VmHWM) once ready".into(),
            value: h.fmt(1, " MiB"),
            baseline: "—".into(),
            ratio: "—".into(),
            target: format!("≤ {P6_HWM_MIB:.0} MiB"),
            pass: Some(h.median <= P6_HWM_MIB),
        },
    ])
}
