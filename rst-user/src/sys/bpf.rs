//! `bpf(2)` commands aya 0.14 does not wrap: batched map reads and program info. The
//! attribute layouts and command numbers are aya-obj's generated UAPI bindings.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, PerCpuArray, PerCpuHashMap},
};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// `bpf(cmd, attr)`: the syscall's non-negative result (an fd for the commands that
/// create one), or the kernel's error.
///
/// # Safety
/// Every pointer `attr` holds must be valid for what the command reads and writes.
pub unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: the caller guarantees the pointers inside attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// How often the kernel skipped this program because another tracing program was
/// running on the same CPU (`bpf_prog_info.recursion_misses`, Linux 5.12+). A tracepoint
/// that fires in a softirq while a tracing program runs in process context on that CPU
/// is not run at all: such resets are counted here instead of being lost silently.
pub fn recursion_misses(prog: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: all-zero is a valid bpf_prog_info and a valid bpf_attr.
    let mut info: bpf_prog_info = unsafe { zeroed() };
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.info.bpf_fd = prog.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    // SAFETY: attr points to an info buffer of info_len bytes that outlives the call.
    unsafe { sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)? };
    Ok(info.recursion_misses)
}

/// Every key of `map` with the sum of its per-CPU `u64` values, in a few syscalls
/// (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+) instead of two per key (aya 0.14 iterates with
/// get_next_key + lookup). A scrape reads every counter map, so this is what keeps
/// `/metrics` fast with thousands of series.
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
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { zeroed() };
        attr.batch.in_batch = if first { 0 } else { token.as_ptr() as u64 };
        attr.batch.out_batch = next.as_mut_ptr() as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = chunk as u32;
        attr.batch.map_fd = fd;
        // SAFETY: attr points to buffers of `chunk` keys and `chunk * ncpus` values that
        // outlive the call; the kernel writes at most that many.
        let err = unsafe { sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        // SAFETY: the batch member is the one written above and by the kernel.
        let n = (unsafe { attr.batch.count } as usize).min(chunk);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            // A bucket holds more keys than fit: retry it with room for more.
            Some(libc::ENOSPC) if n == 0 => {
                chunk *= 4;
                continue;
            }
            None | Some(libc::ENOENT) => {}
            Some(_) => return Err(err.unwrap_or_else(|| io::Error::other("bpf"))),
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

/// The per-CPU sums of the first `n` entries of a per-CPU `u64` array, in one or a few
/// `BPF_MAP_LOOKUP_BATCH` calls; falls back to one lookup per entry.
pub fn percpu_array_sums(map: &PerCpuArray<MapData, u64>, n: u32, ncpus: usize) -> Vec<u64> {
    let n = n.min(map.len());
    match array_batch_sums::<1>(map.map(), n, ncpus) {
        Ok(v) => v.into_iter().map(|[c]| c).collect(),
        Err(_) => (0..n)
            .map(|i| map.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect(),
    }
}

/// [`percpu_array_sums`] for an array of `[u64; N]` values: each counter summed over the
/// CPUs.
pub fn percpu_array_sums_n<const N: usize>(
    map: &PerCpuArray<MapData, [u64; N]>,
    n: u32,
    ncpus: usize,
) -> Vec<[u64; N]> {
    let n = n.min(map.len());
    match array_batch_sums::<N>(map.map(), n, ncpus) {
        Ok(v) => v,
        Err(_) => (0..n)
            .map(|i| {
                let mut sum = [0u64; N];
                if let Ok(v) = map.get(&i, 0) {
                    for cpu in v.iter() {
                        for (s, c) in sum.iter_mut().zip(cpu) {
                            *s += c;
                        }
                    }
                }
                sum
            })
            .collect(),
    }
}

/// The first `n` entries of the per-CPU array `map`, whose values are `[u64; N]`, each
/// counter summed over the CPUs.
fn array_batch_sums<const N: usize>(
    map: &MapData,
    n: u32,
    ncpus: usize,
) -> io::Result<Vec<[u64; N]>> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut out = Vec::with_capacity(n as usize);
    let mut keys = vec![0u32; n as usize];
    // A per-CPU value is its size rounded up to 8 bytes: N words.
    let mut values = vec![0u64; n as usize * ncpus * N];
    let mut token: u32 = 0;
    let mut first = true;
    while (out.len() as u32) < n {
        let want = n - out.len() as u32;
        let mut next: u32 = 0;
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { zeroed() };
        attr.batch.in_batch = if first { 0 } else { (&raw const token) as u64 };
        attr.batch.out_batch = (&raw mut next) as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = want;
        attr.batch.map_fd = fd;
        // SAFETY: attr points to buffers of `n` keys and `n * ncpus` values of N words
        // that outlive the call; the kernel writes at most `want` of each.
        let err = unsafe { sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        // SAFETY: the batch member is the one written above and by the kernel.
        let got = (unsafe { attr.batch.count }).min(want) as usize;
        for entry in values.chunks_exact(ncpus * N).take(got) {
            let mut sum = [0u64; N];
            for cpu in entry.chunks_exact(N) {
                for (s, c) in sum.iter_mut().zip(cpu) {
                    *s += c;
                }
            }
            out.push(sum);
        }
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None => {}
            Some(libc::ENOENT) => break,
            Some(_) => return Err(err.unwrap_or_else(|| io::Error::other("bpf"))),
        }
        if got == 0 {
            break;
        }
        token = next;
        first = false;
    }
    out.resize(n as usize, [0; N]);
    Ok(out)
}

/// The sum of the per-CPU `u64` values of `key` in the per-CPU hash map `map`
/// (`BPF_MAP_LOOKUP_ELEM`), `values` a buffer of at least `ncpus` values; `None` when the
/// key is not there.
pub fn percpu_lookup_sum<K: Pod>(
    map: &PerCpuHashMap<MapData, K, u64>,
    key: &K,
    values: &mut [u64],
) -> io::Result<Option<u64>> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.__bindgen_anon_2.map_fd = map.map().fd().as_fd().as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = (key as *const K) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = values.as_mut_ptr() as u64;
    // SAFETY: key points to a K and values to room for every possible CPU's value (the
    // caller's ncpus), both outliving the call.
    match unsafe { sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(Some(values.iter().sum())),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `memlock` line of a map's `/proc/self/fdinfo` entry, read from `fdinfo` (that
/// file, kept open: each read from offset 0 is a fresh one). Since Linux 6.4 it is the
/// map's memory use, which for a hash map allocated on use grows with every element
/// ([`memlock_counts_elements`]).
pub fn map_memlock(fdinfo: &std::fs::File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = [0u8; 512];
    let n = fdinfo.read_at(&mut buf, 0)?;
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("memlock:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no memlock in fdinfo"))
}

/// Opens the `/proc/self/fdinfo` entry of `map` for [`map_memlock`].
pub fn map_fdinfo<K: Pod>(map: &PerCpuHashMap<MapData, K, u64>) -> io::Result<std::fs::File> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    std::fs::File::open(format!("/proc/self/fdinfo/{fd}"))
}

/// Whether this kernel's `memlock` of a per-CPU hash map allocated on use
/// (`BPF_F_NO_PREALLOC`) changes with its number of elements (Linux 6.4+; before, it is
/// fixed at creation). Probed once, on a map of one element made for it.
pub fn memlock_counts_elements() -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| probe_memlock().unwrap_or(false))
}

fn probe_memlock() -> io::Result<bool> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    // SAFETY: writing the map-creation member of an all-zero attribute.
    let create = unsafe { &mut attr.__bindgen_anon_1 };
    create.map_type = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH as u32;
    create.key_size = 4;
    create.value_size = 8;
    create.max_entries = 1;
    create.map_flags = aya_obj::generated::BPF_F_NO_PREALLOC;
    // SAFETY: a map creation reads only the attribute itself.
    let fd = unsafe { sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr)? };
    // SAFETY: BPF_MAP_CREATE returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let fdinfo = std::fs::File::open(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let memlock = |f: &std::fs::File| map_memlock(f);
    let before = memlock(&fdinfo)?;
    let key = 0u32;
    let values = vec![0u64; aya::util::nr_cpus().map_err(|(_, e)| e)?];
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { zeroed() };
    attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = (&raw const key) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = values.as_ptr() as u64;
    // SAFETY: key and values (one per possible CPU) outlive the call, which reads them.
    unsafe { sys_bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr)? };
    Ok(memlock(&fdinfo)? > before)
}
