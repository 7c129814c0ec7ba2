//! The interface controller end to end, in namespaces the tests create and remove:
//! interfaces that appear after start (globs and the default selection), deleted and
//! recreated under the same name, carrying someone else's XDP program, 20 SIGKILLs
//! that must leave nothing attached, and the series of a burst of interfaces.
//!
//! Privileged (root). Run with `--test-threads=1` (`cargo xtask test` does): the
//! tracepoint counters are host-wide.

mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use aya::programs::{Xdp, XdpMode, links::LinkType};
use common::{Metrics, rstmon, xdp_attachment};
use rst_common::{PROG_XDP, PROG_XDP_NOOP};
use rst_user::{attach::EBPF_OBJECT, netns::Ns};

const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9745));
const LISTEN_2: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9746));
const CLOSED_PORT: u16 = 9;
/// RSTs per burst.
const N: i64 = 25;
/// How soon an interface that appears must be attached.
const ATTACH_WITHIN: Duration = Duration::from_secs(2);

const WIRE: &str = "rstmon_wire_resets_total";
const ATTACHED: &str = "rstmon_xdp_attached";
const SKIPPED: &str = "rstmon_interface_skipped_total";

static SUBNET: AtomicU32 = AtomicU32::new(0);

/// One end of a veth pair created by a test, with an IPv4 address on each end.
struct Link {
    peer_ip: Ipv4Addr,
}

fn ns() -> Ns {
    Ns::new().unwrap_or_else(|e| panic!("creating a namespace (needs root and iproute2): {e}"))
}

/// `ip link add NAME netns A type veth peer name PEER netns B`, addressed and up.
fn add_veth(a: &Ns, name: &str, b: &Ns, peer: &str) -> Link {
    let n = (std::process::id() + SUBNET.fetch_add(1, Ordering::Relaxed)) % 250;
    let root = std::process::Command::new("ip")
        .args([
            "link", "add", name, "netns", &a.name, "type", "veth", "peer", "name", peer, "netns",
            &b.name,
        ])
        .status()
        .unwrap_or_else(|e| panic!("ip link add {name}: {e}"));
    assert!(root.success(), "ip link add {name} failed");
    let (ip_a, ip_b) = (
        Ipv4Addr::new(10, 214, n as u8, 1),
        Ipv4Addr::new(10, 214, n as u8, 2),
    );
    for (ns, ifn, ip) in [(a, name, ip_a), (b, peer, ip_b)] {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", ifn])
            .unwrap_or_else(|e| panic!("address on {ifn}: {e}"));
        ns.ip(&["link", "set", ifn, "up"])
            .unwrap_or_else(|e| panic!("{ifn} up: {e}"));
    }
    Link { peer_ip: ip_b }
}

fn wire(m: &Metrics, iface: &str) -> Option<f64> {
    m.get(
        WIRE,
        &[
            ("interface", iface),
            ("family", "ipv4"),
            ("flags", "rst_ack"),
            ("direction", "ingress"),
        ],
    )
}

fn attached(m: &Metrics, iface: &str) -> bool {
    !m.matching(ATTACHED, &[("interface", iface)]).is_empty()
}

/// Polls `what` every 10 ms until it holds or `within` passes; returns how long it took.
fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The id of the XDP program on `iface`, from `ip link`.
fn xdp_prog_id(ns: &Ns, iface: &str) -> Option<u32> {
    let text = xdp_attachment(ns, iface)?;
    let rest = &text[text
        .find("prog/xdp id ")
        .map(|i| i + 12)
        .or_else(|| text.find(" id ").map(|i| i + 4))?..];
    rest.split_whitespace().next()?.parse().ok()
}

/// XDP links in the whole system whose program is rstmon's (`rstmon_xdp`). aya's
/// `LinkInfo` does not say which interface; no other rstmon runs during the tests.
fn rstmon_xdp_links() -> usize {
    let ours: Vec<u32> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some(PROG_XDP))
        .map(|p| p.id())
        .collect();
    aya::programs::loaded_links()
        .flatten()
        .filter(|l| {
            l.link_type().is_ok_and(|t| t == LinkType::Xdp) && ours.contains(&l.program_id())
        })
        .count()
}

/// A glob that matches nothing at start; an interface that appears is attached within
/// 2 s and counted exactly; deleted and recreated under the same name, it is attached
/// again and counted from zero (the old series is gone).
#[test]
fn glob_follows_interfaces_that_appear_and_are_recreated() {
    let (a, b) = (ns(), ns());
    let prefix = format!("rg{}", std::process::id() % 10_000);
    let name = format!("{prefix}x");
    let mut d = rstmon()
        .listen(LISTEN)
        .args(["-i", &format!("{prefix}*")])
        .start(&a);
    let m = d.scrape();
    assert!(m.matching(ATTACHED, &[]).is_empty(), "nothing matches yet");

    for round in 0..2 {
        let t0 = Instant::now();
        let link = add_veth(&a, &name, &b, &format!("{prefix}p{round}"));
        let in_kernel = wait_for(ATTACH_WITHIN, "XDP on the new interface", || {
            xdp_attachment(&a, &name).is_some_and(|t| t.contains("rstmon_xdp"))
        });
        wait_for(ATTACH_WITHIN, "rstmon_xdp_attached", || {
            attached(&d.scrape(), &name)
        });
        println!(
            "round {round}: {name} attached {:.1} ms after `ip link add` (exported after {:.1} ms)",
            in_kernel.as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(
            wire(&d.scrape(), &name),
            Some(0.0),
            "round {round}: a new interface starts at 0"
        );
        common::connect_refused(
            &a,
            SocketAddr::new(IpAddr::V4(link.peer_ip), CLOSED_PORT),
            N,
        );
        let m = d.scrape();
        assert_eq!(
            wire(&m, &name),
            Some(N as f64),
            "round {round}: {name} counted exactly"
        );
        d.assert_running("after counting");

        a.ip(&["link", "del", &name])
            .unwrap_or_else(|e| panic!("ip link del {name}: {e}"));
        wait_for(ATTACH_WITHIN, "series of a deleted interface gone", || {
            let m = d.scrape();
            wire(&m, &name).is_none() && !attached(&m, &name)
        });
    }
    d.stop();
}

/// An interface that comes into the selection carrying another program's XDP is left
/// alone (same program before and after), the skip is counted once, and the daemon keeps
/// serving; at start-up a glob that meets such an interface is not an error either.
#[test]
fn foreign_xdp_program_is_left_alone() {
    let (a, b) = (ns(), ns());
    let prefix = format!("rf{}", std::process::id() % 10_000);
    let mut d = rstmon()
        .listen(LISTEN)
        .args(["-i", &format!("{prefix}*")])
        .start(&a);
    let before = d.scrape().value(SKIPPED, &[("reason", "foreign_xdp")]);

    // A veth outside the selection gets someone else's program, then is renamed into it.
    let outside = format!("zz{}", std::process::id() % 10_000);
    let _link = add_veth(&a, &outside, &b, &format!("{prefix}q"));
    let mut foreign =
        aya::Ebpf::load(EBPF_OBJECT).expect("loading the object for a foreign program");
    let prog: &mut Xdp = foreign
        .program_mut(PROG_XDP_NOOP)
        .expect("noop program")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("loading the foreign program");
    let ifindex = a.ifindex(&outside).expect("ifindex");
    a.run(|| prog.attach_to_if_index(ifindex, XdpMode::Skb))
        .expect("entering the namespace")
        .expect("attaching the foreign program");
    let id_before = xdp_prog_id(&a, &outside).expect("the foreign program is attached");

    let name = format!("{prefix}x");
    for args in [
        vec!["link", "set", &outside, "down"],
        vec!["link", "set", &outside, "name", &name],
        vec!["link", "set", &name, "up"],
    ] {
        a.ip(&args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    }
    wait_for(ATTACH_WITHIN, "the skip counted", || {
        d.scrape().value(SKIPPED, &[("reason", "foreign_xdp")]) == before + 1.0
    });
    thread::sleep(Duration::from_millis(300));
    let m = d.scrape();
    assert_eq!(
        m.value(SKIPPED, &[("reason", "foreign_xdp")]),
        before + 1.0,
        "counted once"
    );
    assert!(!attached(&m, &name), "rstmon must not claim {name}");
    assert_eq!(
        xdp_prog_id(&a, &name),
        Some(id_before),
        "the foreign program must stay"
    );
    d.assert_running("after meeting a foreign program");

    // A second daemon whose glob meets it at start-up starts and skips it.
    let mut second = rstmon()
        .listen(LISTEN_2)
        .args(["-i", &format!("{prefix}*")])
        .start(&a);
    let m = second.scrape();
    assert_eq!(m.value(SKIPPED, &[("reason", "foreign_xdp")]), 1.0);
    assert!(!attached(&m, &name));
    second.assert_running("second daemon");
    second.stop();
    d.stop();
    assert_eq!(
        xdp_prog_id(&a, &name),
        Some(id_before),
        "still the foreign program"
    );
    drop(foreign);
}

/// Without `-i`, an interface that is created (and brought up) later is picked up.
#[test]
fn default_selection_picks_up_new_interfaces() {
    let (a, b) = (ns(), ns());
    let mut d = rstmon().listen(LISTEN).start(&a);
    let name = format!("rd{}", std::process::id() % 10_000);
    let link = add_veth(&a, &name, &b, &format!("{name}p"));
    let took = wait_for(ATTACH_WITHIN, "default selection attaches", || {
        attached(&d.scrape(), &name)
    });
    println!(
        "default selection: {name} attached after {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    common::connect_refused(
        &a,
        SocketAddr::new(IpAddr::V4(link.peer_ip), CLOSED_PORT),
        N,
    );
    assert_eq!(wire(&d.scrape(), &name), Some(N as f64));
    d.assert_running("default selection");
    d.stop();
    assert!(xdp_attachment(&a, &name).is_none(), "detached on exit");
}

/// 20 × SIGKILL: nothing stays attached (no XDP program on the interface, no XDP link in
/// the system), and a normal start afterwards works and counts.
#[test]
fn twenty_sigkills_leave_nothing_behind() {
    let (a, b) = (ns(), ns());
    let name = format!("rk{}", std::process::id() % 10_000);
    let link = add_veth(&a, &name, &b, &format!("{name}p"));
    for i in 0..20 {
        let d = rstmon().listen(LISTEN).args(["-i", &name]).start(&a);
        assert_eq!(
            rstmon_xdp_links(),
            1,
            "kill #{i}: one XDP link while running"
        );
        let (status, _) = d.signal_and_wait(libc::SIGKILL);
        assert!(!status.success(), "kill #{i}: {status}");
        wait_for(Duration::from_secs(2), "XDP released after SIGKILL", || {
            xdp_attachment(&a, &name).is_none() && rstmon_xdp_links() == 0
        });
    }
    let mut d = rstmon().listen(LISTEN).args(["-i", &name]).start(&a);
    common::connect_refused(
        &a,
        SocketAddr::new(IpAddr::V4(link.peer_ip), CLOSED_PORT),
        N,
    );
    assert_eq!(
        wire(&d.scrape(), &name),
        Some(N as f64),
        "counts after 20 kills"
    );
    d.assert_running("after 20 kills");
    d.stop();
    assert_eq!(rstmon_xdp_links(), 0);
}

/// Names of the `interface` label of `name`'s series that start with `prefix`, each with
/// its number of series.
fn series_per_interface(m: &Metrics, name: &str, prefix: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (s, _) in m.matching(name, &[]) {
        if let Some(i) = s.labels.get("interface").filter(|i| i.starts_with(prefix)) {
            *out.entry(i.clone()).or_default() += 1;
        }
    }
    out
}

/// A burst of 200 new interfaces, attached one after the other (each TC attach waits
/// for an RCU grace period): scrapes are answered while it lasts, and every scrape shows
/// each interface attached so far with all of its series (the exposition's cached
/// per-interface text follows the interfaces); all are attached in the end, and their
/// series go when they are deleted. (That the controller never holds a scrape for long
/// is the benchmark's to show: P4 at ~50 000 series.)
#[test]
fn scrapes_follow_a_burst_of_interfaces() {
    const BURST: usize = 200;
    const GROUP: &str = "4243";
    let a = ns();
    let prefix = format!("rb{}x", std::process::id() % 10_000);
    let d = rstmon()
        .listen(LISTEN)
        .args(["-i", &format!("{prefix}*")])
        .start(&a);
    // ifb devices, created in one batch (this kernel has no dummy driver).
    let batch: String = (0..BURST)
        .map(|k| format!("link add {prefix}{k} group {GROUP} type ifb\n"))
        .collect();
    let mut ip = std::process::Command::new("ip")
        .args(["-n", &a.name, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ip -batch: {e}"));
    std::io::Write::write_all(&mut ip.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    assert!(
        ip.wait().unwrap().success(),
        "creating {BURST} ifb interfaces"
    );

    let check = |m: &Metrics| -> usize {
        let xdp = series_per_interface(m, ATTACHED, &prefix);
        let wire = series_per_interface(m, WIRE, &prefix);
        let keys: Vec<&String> = xdp.keys().collect();
        assert_eq!(
            keys,
            wire.keys().collect::<Vec<_>>(),
            "wire series of the attached"
        );
        assert!(
            wire.values().all(|n| *n == 8),
            "8 wire series each: {wire:?}"
        );
        xdp.len()
    };
    let first = check(&d.scrape());
    wait_for(
        Duration::from_secs(120),
        "every interface of the burst attached",
        || check(&d.scrape()) == BURST,
    );
    println!("burst of {BURST}: {first} attached at the first scrape, then all");
    a.ip(&["link", "del", "group", GROUP])
        .unwrap_or_else(|e| panic!("deleting the burst: {e}"));
    wait_for(Duration::from_secs(60), "the burst's series gone", || {
        check(&d.scrape()) == 0
    });
    d.stop();
}
