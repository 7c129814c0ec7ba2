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
