//! BPF_PROG_TEST_RUN of the real XDP program (`rstmon_xdp` in the embedded object) and
//! of the TC egress program (`rstmon_tc`, SCHED_CLS) on the frames of the host parser
//! tests, well-formed, truncated, malformed and fuzzed:
//!
//! * XDP returns XDP_PASS and TC returns TC_ACT_UNSPEC (no verdict) for every frame;
//! * after every frame, the wire counters moved exactly as the host parser says
//!   (`parse_rst(..).is_some()`, keyed by its family and ACK flag), on each of the three
//!   paths: the interface's slot in `WIRE_SLOTS` (what the daemon's controller sets up),
//!   the `WIRE_COUNTERS` overflow map (no slot), and `WIRE_UNATTRIBUTED` (overflow full);
//!   — ingress counters for XDP, egress counters for TC;
//! * every counted RST put exactly one `WireEvent` in `EVENTS`, equal to what
//!   `fill_sample` gives on the host (apart from `ts_ns`; TC: direction egress and an
//!   origin), and nothing else did;
//! * TC: every counted RST was attributed to exactly one origin (`EGRESS_ORIGINS`), and
//!   one that arrived on another interface (`ingress_ifindex` in the test run's context)
//!   counts as forwarded, per interface.
//!
//! Needs root (CAP_BPF and CAP_NET_ADMIN); CI runs as root.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::ProgramError,
};
use rst_common::{
    DIR_EGRESS, DIR_INGRESS, EGRESS_FORWARDED, EGRESS_ORIGIN_COUNTERS, EGRESS_ORIGINS, FAMILY_IPV4,
    FAMILY_IPV6, IPPROTO_UDP, MAP_EGRESS_ORIGINS, MAP_EVENTS, MAP_FORWARDED, MAP_STATS,
    MAP_WIRE_COUNTERS, MAP_WIRE_SLOTS, MAP_WIRE_UNATTRIBUTED, PROG_TC, PROG_XDP, Stat, TCP_ACK,
    TCP_RST, TCP_SYN, WIRE_SLOT_COUNTERS, WireEvent, WireKey, WireSlot,
    parse::{ETH_HLEN, MAX_EXT_HDRS},
};
use rst_testkit::{
    frames::{self, Ext6, Frame, Rng, TcpOpt, Vlan, catalog, example_rst_v4, mutate},
    loader::{
        TC_ACT_UNSPEC, XDP_PASS, assign_slot, load_object_on_clock, load_object_with, load_tc,
        load_xdp, loopback_ifindex, require_object, require_root, stat_sum, take_map, tc, test_run,
        wire_total, xdp,
    },
};

/// Which path the wire counters take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// The interface has a slot (slot 3, to exercise the index arithmetic).
    Slot,
    /// No slot: the exact overflow hash map.
    Overflow,
    /// No slot and an overflow map of one entry: everything after the first key is
    /// unattributed (still counted).
    Unattributed,
}

const SLOT: u32 = 3;

/// The loaded XDP or TC program and its maps.
struct Harness {
    // Owns the program.
    ebpf: Ebpf,
    layout: Layout,
    /// `DIR_INGRESS`: `rstmon_xdp`; `DIR_EGRESS`: `rstmon_tc`.
    dir: u8,
    origins: PerCpuArray<MapData, u64>,
    slots: PerCpuArray<MapData, WireSlot>,
    counters: PerCpuHashMap<MapData, WireKey, u64>,
    unattributed: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    /// What the host parser predicts the counters hold.
    expected: HashMap<WireKey, u64>,
    /// The ingress ifindex test runs see: the loopback of the current network namespace.
    ifindex: u32,
    rsts: u64,
    /// Frames the kernel refused to run (see `check`).
    refused: u64,
}

impl Harness {
    fn new(layout: Layout) -> Self {
        Self::with(layout, DIR_INGRESS)
    }

    /// The TC egress program with `layout`.
    fn egress(layout: Layout) -> Self {
        Self::with(layout, DIR_EGRESS)
    }

    fn with(layout: Layout, dir: u8) -> Self {
        require_root();
        require_object();
        let sizes: &[(&str, u32)] = match layout {
            Layout::Unattributed => &[(MAP_WIRE_COUNTERS, 1)],
            _ => &[],
        };
        let mut ebpf = load_object_with(u32::MAX, sizes)
            .unwrap_or_else(|e| panic!("loading the eBPF object: {e:?}"));
        if dir == DIR_INGRESS {
            load_xdp(&mut ebpf, PROG_XDP)
                .unwrap_or_else(|e| panic!("loading {PROG_XDP} (verifier): {e}"));
        } else {
            load_tc(&mut ebpf, PROG_TC)
                .unwrap_or_else(|e| panic!("loading {PROG_TC} (verifier): {e}"));
        }
        let ifindex = loopback_ifindex();
        if layout == Layout::Slot {
            assign_slot(&mut ebpf, ifindex, SLOT).unwrap_or_else(|e| panic!("slot: {e}"));
        }
        let slots =
            take_map(&mut ebpf, MAP_WIRE_SLOTS).unwrap_or_else(|e| panic!("{MAP_WIRE_SLOTS}: {e}"));
        let counters = take_map(&mut ebpf, MAP_WIRE_COUNTERS)
            .unwrap_or_else(|e| panic!("{MAP_WIRE_COUNTERS}: {e}"));
        let unattributed = take_map(&mut ebpf, MAP_WIRE_UNATTRIBUTED)
            .unwrap_or_else(|e| panic!("{MAP_WIRE_UNATTRIBUTED}: {e}"));
        let events =
            take_map(&mut ebpf, MAP_EVENTS).unwrap_or_else(|e| panic!("{MAP_EVENTS}: {e}"));
        let stats = take_map(&mut ebpf, MAP_STATS).unwrap_or_else(|e| panic!("{MAP_STATS}: {e}"));
        let origins = take_map(&mut ebpf, MAP_EGRESS_ORIGINS)
            .unwrap_or_else(|e| panic!("{MAP_EGRESS_ORIGINS}: {e}"));
        Self {
            ebpf,
            layout,
            dir,
            origins,
            slots,
            counters,
            unattributed,
            events,
            stats,
            expected: HashMap::new(),
            ifindex,
            rsts: 0,
            refused: 0,
        }
    }

    /// One test run: the program's return value.
    fn try_run(&self, frame: &[u8]) -> Result<u32, ProgramError> {
        if self.dir == DIR_INGRESS {
            test_run(xdp(&self.ebpf, PROG_XDP), frame)
        } else {
            test_run(tc(&self.ebpf, PROG_TC), frame)
        }
    }

    /// What the program must return for every frame.
    fn pass(&self) -> u32 {
        if self.dir == DIR_INGRESS {
            XDP_PASS
        } else {
            TC_ACT_UNSPEC
        }
    }

    /// `EGRESS_ORIGINS` summed over CPUs and every origin.
    fn origins_total(&self) -> u64 {
        (0..EGRESS_ORIGIN_COUNTERS)
            .map(|i| {
                self.origins
                    .get(&i, 0)
                    .unwrap_or_else(|e| panic!("reading {MAP_EGRESS_ORIGINS}[{i}]: {e}"))
                    .iter()
                    .sum::<u64>()
            })
            .sum()
    }

    fn run(&self, frame: &[u8]) -> u32 {
        self.try_run(frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e:?}", frame.len()))
    }

    /// Every wire counter summed over CPUs, by key: the slot's and the unattributed
    /// counters are put under the loopback's key (the only interface test runs see).
    fn counters(&self) -> HashMap<WireKey, u64> {
        let mut out: HashMap<WireKey, u64> = HashMap::new();
        for kv in self.counters.iter() {
            let (k, v) = kv.unwrap_or_else(|e| panic!("reading {MAP_WIRE_COUNTERS}: {e}"));
            *out.entry(k).or_default() += v.iter().sum::<u64>();
        }
        // Only the slot the loopback has, and the unattributed counters; every other
        // slot must stay 0 (checked once, by `check_other_slots_untouched`).
        let mut slot = WireSlot::default();
        for cpu in self
            .slots
            .get(&SLOT, 0)
            .unwrap_or_else(|e| panic!("reading {MAP_WIRE_SLOTS}[{SLOT}]: {e}"))
            .iter()
        {
            for (s, c) in slot.iter_mut().zip(cpu) {
                *s += c;
            }
        }
        let unattributed: WireSlot = std::array::from_fn(|i| {
            self.unattributed
                .get(&(i as u32), 0)
                .unwrap_or_else(|e| panic!("reading {MAP_WIRE_UNATTRIBUTED}[{i}]: {e}"))
                .iter()
                .sum()
        });
        for counts in [slot, unattributed] {
            for within in 0..WIRE_SLOT_COUNTERS {
                let v = counts[within as usize];
                if v == 0 {
                    continue;
                }
                assert_eq!(
                    within / 4,
                    u32::from(self.dir),
                    "each program counts its own direction only"
                );
                let key = WireKey {
                    ifindex: self.ifindex,
                    family: if within & 2 != 0 {
                        FAMILY_IPV6
                    } else {
                        FAMILY_IPV4
                    },
                    ack: (within & 1) as u8,
                    direction: self.dir,
                    _pad: 0,
                };
                *out.entry(key).or_default() += v;
            }
        }
        out
    }

    fn stat(&self, stat: Stat) -> u64 {
        let idx = stat.index();
        self.stats
            .get(&idx, 0)
            .unwrap_or_else(|e| panic!("reading {MAP_STATS}[{idx}] ({stat:?}): {e}"))
            .iter()
            .sum()
    }

    fn drain(&mut self) -> Vec<WireEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(
                item.len(),
                size_of::<WireEvent>(),
                "a ring-buffer record that is not a WireEvent"
            );
            // SAFETY: the length is checked; WireEvent is plain integers.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<WireEvent>()) });
        }
        out
    }

    /// Runs `frame` and asserts the kernel did exactly what the host parser predicts.
    #[track_caller]
    fn check(&mut self, what: &str, frame: &[u8]) {
        let host = frames::parse(frame);
        let ret = match self.try_run(frame) {
            Ok(ret) => ret,
            // The kernel refuses test runs of frames shorter than an Ethernet header
            // (EINVAL), and SCHED_CLS runs of frames whose IPv4/IPv6 header is cut
            // short; the host tests cover those, and none of them is an RST.
            Err(ProgramError::SyscallError(e))
                if (frame.len() < ETH_HLEN || self.dir == DIR_EGRESS)
                    && e.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                self.refused += 1;
                assert_eq!(host, None, "{what}: counted on the host");
                return;
            }
            Err(e) => panic!("{what}: BPF_PROG_TEST_RUN on {} bytes: {e:?}", frame.len()),
        };
        assert_eq!(
            ret,
            self.pass(),
            "{what}: returned {ret}, not the pass verdict: {frame:02x?}"
        );
        if let Some(rst) = host {
            let key = WireKey {
                ifindex: self.ifindex,
                family: rst.family,
                ack: (rst.flags & TCP_ACK != 0) as u8,
                direction: self.dir,
                _pad: 0,
            };
            *self.expected.entry(key).or_default() += 1;
            self.rsts += 1;
        }
        let got = self.counters();
        assert_eq!(
            got, self.expected,
            "{what}: wire counters ({:?}) disagree with the host parser ({host:?}) on {frame:02x?}",
            self.layout
        );
        let events = self.drain();
        match frames::sample(frame) {
            Some(mut want) => {
                assert_eq!(
                    events.len(),
                    1,
                    "{what}: {} samples for one RST",
                    events.len()
                );
                let ev = events[0];
                assert_ne!(ev.ts_ns, 0, "{what}: sample without a timestamp");
                want.ifindex = self.ifindex;
                want.ts_ns = ev.ts_ns;
                want.direction = self.dir;
                if self.dir == DIR_EGRESS {
                    assert!(
                        u32::from(ev.origin) < EGRESS_ORIGINS,
                        "{what}: origin {}",
                        ev.origin
                    );
                    want.origin = ev.origin;
                }
                assert_eq!(
                    ev, want,
                    "{what}: kernel sample != host fill_sample on {frame:02x?}"
                );
            }
            None => assert!(
                events.is_empty(),
                "{what}: samples for a non-RST: {events:?}"
            ),
        }
    }

    /// No slot but the loopback's ever moved.
    fn check_other_slots_untouched(&self) {
        for (slot, v) in self.slots.iter().enumerate() {
            let v: u64 = v
                .unwrap_or_else(|e| panic!("reading {MAP_WIRE_SLOTS}: {e}"))
                .iter()
                .flatten()
                .sum();
            let slot = slot as u32;
            assert!(
                v == 0 || (self.layout == Layout::Slot && slot == SLOT),
                "slot {slot} moved"
            );
        }
    }

    /// The self-counters agree: every RST sampled, nothing lost.
    fn check_stats(&self) {
        self.check_other_slots_untouched();
        assert_eq!(self.stat(Stat::WireSampled), self.rsts, "Stat::WireSampled");
        let origins = self.origins_total();
        if self.dir == DIR_EGRESS {
            assert_eq!(
                origins, self.rsts,
                "every egress RST has exactly one origin"
            );
        } else {
            assert_eq!(origins, 0, "XDP attributes nothing");
        }
        assert_eq!(self.stat(Stat::WireRingFull), 0, "Stat::WireRingFull");
        assert_eq!(self.stat(Stat::WireRateLimited), 0, "Stat::WireRateLimited");
        let full = self.stat(Stat::CounterMapFull);
        if self.layout == Layout::Unattributed {
            assert!(full > 0, "an overflow map of one key never filled");
        } else {
            assert_eq!(full, 0, "Stat::CounterMapFull");
        }
    }
}

/// Malformed and edge-case frames of the host tests, by name.
fn malformed() -> Vec<(String, Vec<u8>)> {
    let rst4 = || Frame::tcp4(TCP_RST);
    let rst6 = || Frame::tcp6(TCP_RST | TCP_ACK);
    let mut out: Vec<(String, Frame)> = Vec::new();
    for ihl in 0..5 {
        out.push((
            format!("ihl {ihl}"),
            rst4().with_ipv4(|ip| ip.ihl_override = Some(ihl)),
        ));
    }
    for doff in [0, 4, 6, 15] {
        out.push((
            format!("v4 doff {doff}"),
            rst4().with_tcp(|t| t.data_offset_override = Some(doff)),
        ));
        out.push((
            format!("v6 doff {doff}"),
            rst6().with_tcp(|t| t.data_offset_override = Some(doff)),
        ));
    }
    for tot in [0u16, 19, 39, 40, 1500] {
        out.push((
            format!("v4 total length {tot}"),
            rst4().with_ipv4(|ip| ip.total_len_override = Some(tot)),
        ));
    }
    for plen in [0u16, 7, 19, 20, 1500] {
        out.push((
            format!("v6 payload length {plen}"),
            rst6().with_ipv6(|ip| ip.payload_len_override = Some(plen)),
        ));
    }
    for offset in [1u16, 0x1fff] {
        out.push((
            format!("v4 fragment offset {offset}"),
            rst4().with_ipv4(|ip| {
                ip.dont_fragment = false;
                ip.more_fragments = true;
                ip.frag_offset = offset;
            }),
        ));
        let frag = Ext6::Fragment {
            offset,
            more: false,
            id: 9,
        };
        out.push((
            format!("v6 fragment offset {offset}"),
            rst6().with_ipv6(|ip| ip.ext = vec![Ext6::HopByHop { len: 0 }, frag]),
        ));
    }
    out.push((
        "v4 udp".into(),
        rst4().with_ipv4(|ip| ip.protocol_override = Some(IPPROTO_UDP)),
    ));
    out.push((
        "v6 udp after hbh".into(),
        rst6().with_ipv6(|ip| {
            ip.ext = vec![Ext6::HopByHop { len: 0 }];
            ip.protocol_override = Some(IPPROTO_UDP);
        }),
    ));
    out.push((
        "v4 version 6".into(),
        rst4().with_ipv4(|ip| ip.version_override = Some(6)),
    ));
    out.push((
        "three vlan tags".into(),
        rst4().with_vlans(&[Vlan::dot1ad(1), Vlan::dot1q(2), Vlan::dot1q(3)]),
    ));
    out.push((
        "too many extension headers".into(),
        rst6().with_ipv6(|ip| ip.ext = vec![Ext6::DestOpts { len: 0 }; MAX_EXT_HDRS + 1]),
    ));
    out.push((
        "six extension headers".into(),
        rst6().with_ipv6(|ip| ip.ext = vec![Ext6::DestOpts { len: 0 }; MAX_EXT_HDRS]),
    ));
    out.push((
        "tcp past the offset limit".into(),
        rst6().with_ipv6(|ip| ip.ext = vec![Ext6::DestOpts { len: 255 }]),
    ));
    out.push((
        "tcp at the offset limit".into(),
        rst6().with_ipv6(|ip| ip.ext = vec![Ext6::DestOpts { len: 56 }]),
    ));
    for (name, opts) in [
        (
            "ts length 8",
            vec![TcpOpt::Raw(vec![8, 8, 0, 0, 0, 1, 0, 0])],
        ),
        (
            "ts cut by the data offset",
            vec![TcpOpt::Nop, TcpOpt::Raw(vec![8, 10])],
        ),
        (
            "eol before ts",
            vec![TcpOpt::Eol, TcpOpt::Timestamp { val: 1, ecr: 2 }],
        ),
        (
            "syn-style options",
            vec![
                TcpOpt::Mss(1460),
                TcpOpt::SackPermitted,
                TcpOpt::Timestamp { val: 1, ecr: 2 },
                TcpOpt::Nop,
                TcpOpt::WindowScale(7),
            ],
        ),
    ] {
        out.push((
            format!("v4 {name}"),
            rst4().with_tcp(|t| {
                t.options = opts.clone();
                t.payload = vec![8, 10, 0, 0];
            }),
        ));
    }
    out.into_iter()
        .map(|(name, f)| (name, f.build().bytes))
        .collect()
}

#[test]
fn xdp_passes_and_counts_like_the_host_parser_on_every_frame_and_prefix() {
    every_frame_and_prefix(Harness::new(Layout::Slot));
}

#[test]
fn tc_passes_and_counts_like_the_host_parser_on_every_frame_and_prefix() {
    every_frame_and_prefix(Harness::egress(Layout::Slot));
}

fn every_frame_and_prefix(mut h: Harness) {
    let mut frames: Vec<(String, Vec<u8>)> = catalog()
        .into_iter()
        .map(|(name, f)| (name, f.build().bytes))
        .collect();
    frames.extend(malformed());
    let mut runs = 0;
    for (name, bytes) in &frames {
        h.check(name, bytes);
        // Truncated at every byte.
        for len in 0..bytes.len() {
            h.check(&format!("{name} cut at {len}"), &bytes[..len]);
            runs += 1;
        }
    }
    assert!(runs > 10_000, "only {runs} truncated frames");
    assert!(h.rsts > 100, "only {} RSTs counted", h.rsts);
    // Both families and both ACK values were exercised.
    let keys: Vec<(u8, u8)> = h.expected.keys().map(|k| (k.family, k.ack)).collect();
    for want in [
        (FAMILY_IPV4, 0),
        (FAMILY_IPV4, 1),
        (FAMILY_IPV6, 0),
        (FAMILY_IPV6, 1),
    ] {
        assert!(
            keys.contains(&want),
            "no RST counted with family/ack {want:?}"
        );
    }
    h.check_stats();
}

/// The wire sampler's limit holds on either clock the loader can choose (the coarse one
/// where the kernel has `bpf_ktime_get_coarse_ns`, the precise one before 5.11): every
/// RST counted, at most `RATE` of them sampled per second and the rest counted as
/// rate-limited.
#[test]
fn sample_limit_holds_on_either_clock() {
    require_root();
    require_object();
    const RATE: u64 = 5;
    const RUNS: u64 = 200;
    let frame = example_rst_v4().build().bytes;
    for coarse in [true, false] {
        let mut ebpf = load_object_on_clock(RATE as u32, coarse)
            .unwrap_or_else(|e| panic!("loading the eBPF object (coarse {coarse}): {e:?}"));
        load_xdp(&mut ebpf, PROG_XDP)
            .unwrap_or_else(|e| panic!("loading {PROG_XDP} (coarse {coarse}): {e}"));
        for _ in 0..RUNS {
            let ret = test_run(xdp(&ebpf, PROG_XDP), &frame)
                .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (coarse {coarse}): {e:?}"));
            assert_eq!(ret, XDP_PASS);
        }
        let sampled = stat_sum(&ebpf, Stat::WireSampled);
        let limited = stat_sum(&ebpf, Stat::WireRateLimited);
        assert_eq!(wire_total(&ebpf), RUNS, "coarse {coarse}: counted");
        assert_eq!(
            sampled + limited,
            RUNS,
            "coarse {coarse}: sampled + limited"
        );
        // The runs take far less than a second: one window, or two when a second of
        // the clock ends among them.
        assert!(
            (RATE..=2 * RATE).contains(&sampled),
            "coarse {coarse}: {sampled} sampled at a limit of {RATE}/s"
        );
    }
}

#[test]
fn xdp_agrees_with_the_host_parser_on_fuzzed_frames_without_a_slot() {
    fuzz(Harness::new(Layout::Overflow));
}

#[test]
fn tc_agrees_with_the_host_parser_on_fuzzed_frames_without_a_slot() {
    fuzz(Harness::egress(Layout::Overflow));
}

#[test]
fn tc_agrees_with_the_host_parser_on_fuzzed_frames_overflow_full() {
    fuzz(Harness::egress(Layout::Unattributed));
}

#[test]
fn tc_agrees_with_the_host_parser_on_fuzzed_frames_in_a_slot() {
    fuzz(Harness::egress(Layout::Slot));
}

#[test]
fn xdp_agrees_with_the_host_parser_on_fuzzed_frames_overflow_full() {
    fuzz(Harness::new(Layout::Unattributed));
}

#[test]
fn xdp_agrees_with_the_host_parser_on_fuzzed_frames_in_a_slot() {
    fuzz(Harness::new(Layout::Slot));
}

fn fuzz(mut h: Harness) {
    let bases: Vec<Vec<u8>> = catalog().iter().map(|(_, f)| f.build().bytes).collect();
    let mut rng = Rng::new(0x0bad_5eed_7e57_0001);
    for i in 0..20_000 {
        let mut frame = bases[rng.below(bases.len())].clone();
        mutate(&mut rng, &mut frame);
        h.check(&format!("fuzz #{i}"), &frame);
    }
    assert!(
        h.rsts > 2000,
        "only {} of 20000 fuzzed frames were RSTs",
        h.rsts
    );
    h.check_stats();
}

#[test]
fn xdp_sample_equals_host_fill_sample_field_by_field() {
    let mut h = Harness::new(Layout::Slot);
    let v4 = example_rst_v4().build().bytes;
    let v6 = Frame::tcp6(TCP_RST)
        .with_vlans(&[Vlan::dot1ad(100), Vlan::dot1q(200)])
        .with_ipv6(|ip| {
            ip.src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
            ip.hop_limit = 255;
            ip.ext = vec![Ext6::HopByHop { len: 0 }, Ext6::FIRST_FRAGMENT, Ext6::AH];
        })
        .with_tcp(|t| {
            t.sport = 1;
            t.dport = 65535;
            t.seq = 7;
            t.options = vec![TcpOpt::Mss(1220)];
            t.payload = vec![0; 300];
        })
        .build()
        .bytes;
    for (name, frame, has_ts, vlan_depth, payload_len) in
        [("v4", &v4, 1, 1, 5), ("v6", &v6, 0, 2, 300)]
    {
        assert_eq!(h.run(frame), XDP_PASS, "{name}");
        let events = h.drain();
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let ev = events[0];
        let mut want = frames::sample(frame).expect("an RST on the host");
        assert_eq!(
            (want.has_ts, want.vlan_depth, want.payload_len),
            (has_ts, vlan_depth, payload_len),
            "{name}: host sample"
        );
        // XDP_PROG_TEST_RUN without a context runs on the loopback's receive queue.
        assert_eq!(ev.ifindex, h.ifindex, "{name}: ifindex (loopback's)");
        want.ifindex = ev.ifindex;
        want.ts_ns = ev.ts_ns;
        assert_eq!(ev, want, "{name}");
    }
    // A SYN leaves no sample.
    assert_eq!(h.run(&Frame::tcp4(TCP_SYN).build().bytes), XDP_PASS);
    assert!(h.drain().is_empty());
}

/// A test run whose context says the frame arrived on another interface
/// (`ingress_ifindex`): `rstmon_tc` counts it as forwarded, in `FORWARDED` under the
/// interface it leaves by (the test run's device, the loopback).
#[test]
fn tc_counts_an_rst_received_elsewhere_as_forwarded() {
    use aya::{maps::PerCpuHashMap, programs::TestRun as _};
    use rst_testkit::loader::TC_ACT_UNSPEC as PASS;
    let mut h = Harness::egress(Layout::Slot);
    let frame = Frame::tcp4(TCP_RST | TCP_ACK).build().bytes;
    // struct __sk_buff up to and including ifindex (offset 40); ingress_ifindex at 36.
    let mut ctx = [0u8; 44];
    ctx[36..40].copy_from_slice(&h.ifindex.to_ne_bytes());
    let r = tc(&h.ebpf, PROG_TC)
        .test_run(aya::programs::TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN with a context: {e:?}"));
    assert_eq!(r.return_value, PASS);
    let forwarded: PerCpuHashMap<MapData, WireKey, u64> =
        take_map(&mut h.ebpf, MAP_FORWARDED).unwrap_or_else(|e| panic!("{MAP_FORWARDED}: {e}"));
    let got: Vec<(WireKey, u64)> = forwarded
        .iter()
        .map(|kv| kv.map(|(k, v)| (k, v.iter().sum::<u64>())))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {MAP_FORWARDED}: {e}"));
    let key = WireKey {
        ifindex: h.ifindex,
        family: FAMILY_IPV4,
        ack: 0,
        direction: DIR_EGRESS,
        _pad: 0,
    };
    assert_eq!(got, vec![(key, 1)]);
    let i = rst_common::egress_origin_index(EGRESS_FORWARDED, 0, 1);
    let v: u64 = h.origins.get(&i, 0).expect("origins").iter().sum();
    assert_eq!(v, 1, "counted once, as forwarded");
    assert_eq!(h.origins_total(), 1);
}
