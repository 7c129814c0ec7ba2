//! `sys::bpf::percpu_sums` reads a per-CPU hash map exactly, across many batches. Needs
//! root.

use aya::{
    maps::{MapData, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use rst_common::{MAP_WIRE_COUNTERS, WireKey};
use rst_testkit::loader::load_object;
use rst_user::sys::bpf::{batch_sums, percpu_sums};

#[test]
fn batch_read_sums_every_key_exactly() {
    let mut ebpf = load_object(0).expect("load the eBPF object (needs root)");
    let mut map: PerCpuHashMap<MapData, WireKey, u64> = ebpf
        .take_map(MAP_WIRE_COUNTERS)
        .expect("wire counters")
        .try_into()
        .expect("a per-CPU hash map");
    let ncpus = nr_cpus().expect("possible CPUs");
    assert!(percpu_sums(&map, ncpus).is_empty(), "a new map is empty");

    // More keys than one batch holds, different values per CPU.
    let n = 3000u32;
    for i in 0..n {
        let key = WireKey {
            ifindex: i,
            family: 4 + 2 * (i % 2) as u8,
            ack: (i % 3 == 0) as u8,
            direction: 0,
            _pad: 0,
        };
        let values: Vec<u64> = (0..ncpus as u64).map(|c| u64::from(i) * 10 + c).collect();
        map.insert(key, PerCpuValues::try_from(values).expect("values"), 0)
            .expect("insert");
    }
    let batched = batch_sums(&map, ncpus).expect("BPF_MAP_LOOKUP_BATCH works here");
    let mut got = percpu_sums(&map, ncpus);
    assert_eq!(batched.len(), got.len());
    got.sort_by_key(|(k, _)| k.ifindex);
    assert_eq!(got.len(), n as usize, "every key once");
    let per_cpu_extra: u64 = (0..ncpus as u64).sum();
    for (i, (k, sum)) in got.iter().enumerate() {
        assert_eq!(k.ifindex, i as u32);
        assert_eq!(
            *sum,
            i as u64 * 10 * ncpus as u64 + per_cpu_extra,
            "key {i}"
        );
    }
}

/// `sources::workload::collect` is exact whether it scans `WORKLOAD_COUNTERS` or looks up
/// the keys of its last scan: values that move, keys that are added, and on Linux 6.4+
/// the probe finds that the map's memlock counts its elements (what the lookups rely on).
#[test]
fn workload_counts_are_exact_between_scans() {
    use aya::maps::{Map, MapData};
    use rst_common::{MAP_WORKLOAD_COUNTERS, WorkloadKey};
    use rst_user::{sources::workload, sys::bpf::memlock_counts_elements};

    let mut ebpf = load_object(0).expect("load the eBPF object (needs root)");
    let id = match ebpf.map(MAP_WORKLOAD_COUNTERS).expect("workload counters") {
        Map::PerCpuHashMap(d) => d.info().expect("map info").id(),
        _ => panic!("WORKLOAD_COUNTERS is not a per-CPU hash map"),
    };
    let maps = workload::Maps::try_from(ebpf.take_map(MAP_WORKLOAD_COUNTERS).unwrap())
        .expect("a per-CPU hash map");
    // A handle of our own to write through, as the programs would.
    let mut map: PerCpuHashMap<MapData, WorkloadKey, u64> =
        Map::PerCpuHashMap(MapData::from_id(id).expect("the map by id"))
            .try_into()
            .expect("a per-CPU hash map");
    let ncpus = nr_cpus().expect("possible CPUs");
    let key = |i: u64| WorkloadKey {
        cgroup_id: 1000 + i,
        netns: 7,
        side: (i % 2) as u8,
        _pad: [0; 3],
        key: i * 3,
    };
    let set = |map: &mut PerCpuHashMap<MapData, WorkloadKey, u64>, i: u64, v: u64| {
        let values = PerCpuValues::try_from(vec![v; ncpus]).expect("values");
        map.insert(key(i), values, 0).expect("insert");
    };
    let sorted = |mut v: Vec<(WorkloadKey, u64)>| {
        v.sort_by_key(|(k, _)| k.cgroup_id);
        v.into_iter()
            .map(|(k, v)| (k.cgroup_id - 1000, v))
            .collect::<Vec<_>>()
    };
    let n = ncpus as u64;
    assert!(
        workload::collect(&maps, ncpus).is_empty(),
        "a new map is empty"
    );
    assert!(workload::collect(&maps, ncpus).is_empty());
    set(&mut map, 0, 1);
    set(&mut map, 1, 2);
    assert_eq!(
        sorted(workload::collect(&maps, ncpus)),
        [(0, n), (1, 2 * n)]
    );
    // Values move, no key is added: read key by key where memlock counts elements.
    for round in 2..5 {
        set(&mut map, 1, round);
        assert_eq!(
            sorted(workload::collect(&maps, ncpus)),
            [(0, n), (1, round * n)],
            "round {round}"
        );
    }
    // A key is added: found at once.
    set(&mut map, 2, 5);
    assert_eq!(
        sorted(workload::collect(&maps, ncpus)),
        [(0, n), (1, 4 * n), (2, 5 * n)]
    );
    set(&mut map, 0, 9);
    assert_eq!(
        sorted(workload::collect(&maps, ncpus)),
        [(0, 9 * n), (1, 4 * n), (2, 5 * n)]
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) >= (6, 4) {
        assert!(
            memlock_counts_elements(),
            "Linux {major}.{minor}: a hash map's memlock should count its elements"
        );
    }
}
