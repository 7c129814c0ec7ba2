//! contrib/prometheus and contrib/grafana against the real tools: `promtool test rules`
//! on the alert rules, and a real Prometheus server (Debian's) scraping a real rstmon
//! every second while S1 and S7 run: the reset counts it stores are exact, the alert
//! rules load and evaluate, and every query of the dashboard returns data (the reset,
//! workload, egress-origin, verdict and histogram panels show the generated resets).
//!
//! Privileged (namespaces, the daemon): needs root; run with `--test-threads=1`.

mod common;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Metrics, promtool, run_to_exit};
use rst_testkit::prometheus::{Prometheus, SCRAPE_INTERVAL, Sample};
use rst_user::{netns::Pair, selftest::SCENARIOS};
use serde_json::Value;

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");
const SENT: &str = "rstmon_resets_sent_total";
const RECEIVED: &str = "rstmon_resets_received_total";
const WORKLOAD: &str = "rstmon_workload_resets_total";

fn contrib(path: &str) -> String {
    format!("{CONTRIB}/{path}")
}

#[test]
fn alert_rules_pass_promtool() {
    for args in [
        ["check", "rules", "rstmon-alerts.yml"],
        ["test", "rules", "rstmon-alerts.test.yml"],
    ] {
        let mut cmd = Command::new(promtool());
        cmd.current_dir(contrib("prometheus")).args(args);
        let out = run_to_exit(cmd, "promtool");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("promtool {}:\n{said}", args.join(" "));
        assert!(
            out.status.success(),
            "promtool {}: {}:\n{said}",
            args.join(" "),
            out.status
        );
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

/// Each dashboard query with the Grafana variables it uses filled in the way Grafana
/// would for "All" instances: (panel title, refId, PromQL).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(contrib("grafana/rstmon.json")).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = d["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1m")
                .replace("$instance", ".*");
            assert!(!q.contains('$'), "unknown variable in {expr}");
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["refId"].as_str().unwrap_or_default().to_string(),
                q,
            ));
        }
    }
    out
}

fn by(samples: &[Sample], label: &str) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| (s.label(label).to_string(), s.value))
        .collect()
}

/// How much `name{cause}` grew between two scrapes of rstmon, over both families.
fn own_delta(after: &Metrics, before: &Metrics, name: &str, cause: &str) -> f64 {
    ["ipv4", "ipv6"]
        .iter()
        .map(|f| after.delta(before, name, &[("cause", cause), ("family", f)]) as f64)
        .sum()
}

/// The newest sample time Prometheus has of rstmon (Unix seconds, ms precision).
fn last_scrape(prom: &Prometheus) -> f64 {
    prom.query("max(timestamp(rstmon_build_info))", None)
        .first()
        .map(|s| s.value)
        .expect("rstmon_build_info scraped")
}

/// Waits until Prometheus stores a scrape of rstmon taken after now.
fn wait_for_a_scrape_from_now(prom: &Prometheus, to: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    prom.wait_for("max(timestamp(rstmon_build_info))", to, |r| {
        r.first()
            .is_some_and(|s| s.value > now + SCRAPE_INTERVAL.as_secs_f64() / 2.0)
    });
}

/// The sum of every `name` series having `labels` in one scrape of rstmon.
fn sum_of(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.matching(name, labels).iter().map(|(_, v)| v).sum()
}

#[test]
fn real_prometheus_scrapes_exact_counts_and_every_dashboard_query_has_data() {
    let t_start = Instant::now();
    let pair = Pair::new().expect("namespaces and veth pair");
    let listen: SocketAddr = "127.0.0.1:9745".parse().expect("address");
    // Neither start connects before the server listens: a refused connect is an S1 reset,
    // and the counters must start at 0 (see the increase() query below).
    let daemon = common::rstmon()
        .ifaces(&[&pair.a_if])
        .listen(listen)
        .quiet_start()
        .start(&pair.a);
    let rules = contrib("prometheus/rstmon-alerts.yml");
    let prom = Prometheus::start(&pair.a, listen, &[Path::new(&rules)]);

    // Two scrapes of the daemon before the traffic.
    let to = Duration::from_secs(20);
    prom.wait_for("count_over_time(up{job=\"rstmon\"}[1m])", to, |r| {
        r.first().is_some_and(|s| s.value >= 2.0)
    });
    assert_eq!(
        prom.query("up{job=\"rstmon\"}", None)
            .first()
            .map(|s| s.value),
        Some(1.0),
        "the target is up"
    );
    // One S5 first. A workload's series start at its first reset, and rate() needs two
    // samples of a series: S5 makes the workloads of the traffic below (the test's own
    // cgroup on the received side, namespace b's unowned resets on the sent side) known,
    // with every cause at 0, in a scrape Prometheus stores before that traffic. Its
    // causes (no_connection, peer_lost_state) are none of those checked below.
    let s5 = SCENARIOS.iter().find(|s| s.id == "S5").expect("S5");
    s5.run(&pair, false).unwrap_or_else(|e| panic!("S5: {e}"));
    let deadline = Instant::now() + to;
    loop {
        let m = daemon.scrape();
        let w = |side, cause| sum_of(&m, WORKLOAD, &[("side", side), ("cause", cause)]);
        if w("sent", "no_connection") >= 1.0 && w("received", "peer_lost_state") >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rstmon did not count S5 by workload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_a_scrape_from_now(&prom, to);
    let t0 = last_scrape(&prom);
    let before = daemon.scrape();

    // S1 five times and S7 three times, over both families: every RST comes from b and
    // enters a's interface. One more refused connect, from b to a closed port of a, sends
    // an RST out of a's monitored interface (rstmon's TC egress there: origin stack).
    let closed = pair
        .a
        .run(|| TcpListener::bind((pair.a4, 0)).and_then(|l| l.local_addr()))
        .expect("namespace a")
        .expect("a port of a");
    common::connect_refused(&pair.b, closed, 1);
    let runs = [
        ("S1", false, 3),
        ("S1", true, 2),
        ("S7", false, 2),
        ("S7", true, 1),
    ];
    for (id, v6, n) in runs {
        let sc = SCENARIOS.iter().find(|s| s.id == id).expect("scenario");
        for _ in 0..n {
            sc.run(&pair, v6)
                .unwrap_or_else(|e| panic!("{id} (v6: {v6}): {e}"));
        }
    }
    let want_sent = [("no_listener", 6.0), ("linger_abort", 3.0)];
    let want_received = [("refused", 6.0), ("peer_abort", 3.0)];
    // rstmon has counted them: wait for its own /metrics, then for Prometheus to store a
    // scrape taken after that.
    let deadline = Instant::now() + to;
    let after = loop {
        let m = daemon.scrape();
        let d = |name, cause| own_delta(&m, &before, name, cause);
        let all = want_sent.iter().all(|(c, n)| d(SENT, *c) >= *n)
            && want_received.iter().all(|(c, n)| d(RECEIVED, *c) >= *n);
        if all {
            break m;
        }
        assert!(Instant::now() < deadline, "rstmon did not count S1 and S7");
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_for_a_scrape_from_now(&prom, to);
    // Evaluate everything at the newest scrape's own time, so the range ends on a sample.
    let t = last_scrape(&prom);
    println!("scrapes stored from {t0:.3} to {t:.3}");

    // The exact counts: the stored counters at t minus those at t0 (`@` modifier).
    for (name, want) in [(SENT, &want_sent[..]), (RECEIVED, &want_received[..])] {
        let q = format!("sum by (cause) ({name}) - sum by (cause) ({name} @ {t0:.3})");
        let got = by(&prom.query(&q, Some(t)), "cause");
        println!("{q}\n  = {got:?}");
        for (cause, n) in want {
            assert_eq!(got.get(*cause), Some(n), "{q}: {cause}");
        }
        // Every other cause moved exactly as much as rstmon's own counters did.
        for (cause, v) in &got {
            let own = own_delta(&after, &before, name, cause);
            assert_eq!(*v, own, "{q}: {cause} in Prometheus vs rstmon's /metrics");
        }
    }
    // The dashboard's usual query. increase() extrapolates to the ends of the window, but
    // not here: every series is younger than the 1m window and its first sample is 0 (so
    // it extrapolates to zero, no further), and the range ends on a sample: it is the
    // exact count. (It assumes no other reset of these causes on the host meanwhile, like
    // every exact-delta test.)
    let q = "sum by (cause) (increase(rstmon_resets_sent_total[1m]))";
    let inc = by(&prom.query(q, Some(t)), "cause");
    println!("{q}\n  = {inc:?}");
    for (cause, n) in want_sent {
        let got = inc.get(cause).copied().unwrap_or(f64::NAN);
        assert!((got - n).abs() < 1e-9, "{q}: {cause} = {got}, want {n}");
    }

    // The alert rules load and evaluate on the real server.
    let rules = prom.api("/api/v1/rules");
    let groups = rules["groups"].as_array().expect("groups");
    let mut n_rules = 0;
    for g in groups {
        for r in g["rules"].as_array().expect("rules") {
            n_rules += 1;
            assert_eq!(r["health"], "ok", "rule {}: {r}", r["name"]);
        }
    }
    assert!(n_rules >= 9, "{n_rules} rules loaded: {rules}");

    // Every dashboard query returns data; the reset panels show the generated causes.
    // The suspect, challenged/ignored, non-stack origin and overflow panels show 0: this
    // traffic has no forged, out-of-window or firewall RST and few workloads, and rstmon
    // exports those series at 0 for each monitored interface (origin, the host) from its
    // start, so the queries still have data (tests/verdicts.rs, egress.rs and
    // attribution.rs make them move).
    let queries = dashboard_queries();
    for (title, ref_id, q) in &queries {
        let r = prom.query(q, Some(t));
        println!("{title} / {ref_id}: {q} -> {} series", r.len());
        for s in &r {
            println!("    {s:?}");
        }
        assert!(
            !r.is_empty(),
            "dashboard panel {title:?} {ref_id}: no data for {q}"
        );
        // Some series has label = value and a value above 0.
        let positive =
            |label: &str, value: &str| r.iter().any(|s| s.label(label) == value && s.value > 0.0);
        let shows = |cause: &str| positive("cause", cause);
        let ok = match title.as_str() {
            "Sent by cause" | "Top workloads sending RSTs" => {
                shows("no_listener") && shows("linger_abort")
            }
            "Received by cause" | "Top workloads receiving RSTs" => {
                shows("refused") && shows("peer_abort")
            }
            "Workloads with the most resets in the time range" => {
                shows("no_listener") && shows("refused")
            }
            "Wire RSTs by interface" => positive("interface", &pair.a_if),
            "Egress RSTs by origin" => positive("origin", "stack"),
            "Ingress RSTs by verdict" => positive("verdict", "accepted"),
            // S7's connections: both sides, a real quantile (not NaN).
            "Idle time before a reset" | "Connection age at a reset" => {
                positive("side", "sent") && positive("side", "received")
            }
            "Idle time before RSTs sent" | "Idle time before RSTs received" => {
                positive("le", "+Inf")
            }
            _ => true,
        };
        assert!(
            ok,
            "dashboard panel {title:?} {ref_id}: {q} does not show the traffic: {r:?}"
        );
    }
    assert!(queries.len() >= 36, "{} dashboard queries", queries.len());
    drop(prom);
    daemon.stop();
    println!("took {:.1} s", t_start.elapsed().as_secs_f64());
}
