//! Reading a whole per-CPU hash map in a few syscalls (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+)
//! instead of two per key (aya 0.14 iterates with get_next_key + lookup). A scrape reads
//! every counter map, so this is what keeps `/metrics` fast with thousands of series.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, PerCpuHashMap},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every key of `map` with the sum of its per-CPU `u64` values.
///
/// Falls back to aya's key-by-key iteration when the kernel refuses batch lookups.
pub fn percpu_sums<K: Pod>(map: &PerCpuHashMap<MapData, K, u64>, ncpus: usize) -> Vec<(K, u64)> {
    match batch_sums::<K>(map, ncpus) {
        Ok(v) => v,
        Err(_) => map
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.iter().sum()))
            .collect(),
    }
}

/// [`percpu_sums`] without the fallback: the kernel's error if it refuses batch lookups.
pub fn batch_sums<K: Pod>(
    map: &PerCpuHashMap<MapData, K, u64>,
    ncpus: usize,
) -> io::Result<Vec<(K, u64)>> {
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let ksize = size_of::<K>();
    let mut chunk = 512usize;
    let mut out = Vec::new();
    // Hash-map batch tokens are bucket numbers (u32); 8 bytes leaves room.
    let mut token = [0u8; 8];
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * ksize];
        let mut values = vec![0u64; chunk * ncpus];
        let mut next = [0u8; 8];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd,
            ..Default::default()
        };
        // SAFETY: attr points to buffers of `chunk` keys and `chunk * ncpus` values that
        // outlive the call; the kernel writes at most that many.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(chunk);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            // A bucket holds more keys than fit: retry it with room for more.
            Some(libc::ENOSPC) if n == 0 => {
                chunk *= 4;
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.expect("an error")),
        }
        for i in 0..n {
            // SAFETY: the kernel wrote n keys of size_of::<K>() bytes; K is Pod.
            let key = unsafe { std::ptr::read_unaligned(keys[i * ksize..].as_ptr().cast::<K>()) };
            let sum = values[i * ncpus..(i + 1) * ncpus].iter().sum();
            out.push((key, sum));
        }
        if err.is_some() {
            // ENOENT: that was the last batch.
            return Ok(out);
        }
        token = next;
        first = false;
    }
}
