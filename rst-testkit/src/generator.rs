//! The traffic generator: a two-instruction XDP program (`return XDP_TX`) run with
//! BPF_PROG_TEST_RUN in live-frames mode on one end of a veth pair. Live frames turn
//! XDP_TX into a real transmission out of that veth, so every frame crosses the pair and
//! is received by the other end (its XDP hook, then its TCP stack) like wire traffic.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use crate::process::pin_thread;
use aya_obj::generated::{
    BPF_F_TEST_XDP_LIVE_FRAMES, bpf_attr, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_XDP,
};
use rst_user::{netns::Ns, sys::bpf::sys_bpf};

/// `struct xdp_md`, the context of an XDP test run (not in aya-obj's bindings).
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

pub struct Generator {
    fd: OwnedFd,
}

impl Generator {
    /// Loads `r0 = XDP_TX; exit`.
    pub fn load() -> io::Result<Self> {
        let insns: [u64; 2] = [0xb7 | (3u64 << 32), 0x95];
        let license = b"GPL\0";
        let mut name = [0u8; 16];
        name[..13].copy_from_slice(b"rstmon_gen_tx");
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the prog-load member of a zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = BPF_PROG_TYPE_XDP as u32;
        load.insn_cnt = insns.len() as u32;
        load.insns = insns.as_ptr() as u64;
        load.license = license.as_ptr() as u64;
        for (d, s) in load.prog_name.iter_mut().zip(name) {
            *d = s as core::ffi::c_char;
        }
        // SAFETY: the pointers in attr outlive the call.
        let fd = unsafe { sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: the kernel returned a new fd that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { fd })
    }

    /// Sends `repeat` copies of `frame` out of `ifindex` (in the calling thread's
    /// network namespace).
    pub fn send(&self, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<()> {
        let ctx = XdpMd {
            data: 0,
            data_end: frame.len() as u32,
            data_meta: 0,
            ingress_ifindex: ifindex,
            rx_queue_index: 0,
            egress_ifindex: 0,
        };
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the test-run member of a zeroed union.
        let t = unsafe { &mut attr.test };
        t.prog_fd = self.fd.as_raw_fd() as u32;
        t.data_size_in = frame.len() as u32;
        t.data_in = frame.as_ptr() as u64;
        t.repeat = repeat;
        t.ctx_size_in = size_of::<XdpMd>() as u32;
        t.ctx_in = (&raw const ctx) as u64;
        t.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
        // SAFETY: the frame and the context outlive the call.
        unsafe { sys_bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr) }.map(|_| ())
    }
}

/// Sends frames at `rate` per second in all (0 = as fast as possible) for about `dur`,
/// from one thread per CPU in `cpus`, each pinned and inside `ns`. Returns (frames sent,
/// elapsed).
///
/// Each live-frames test_run call costs about 27 ms of set-up and tear-down on this VM
/// (a page pool per call, released after an RCU grace period), whatever its size: at full
/// speed every call is sized to last about half a second; paced, calls are at least 50 ms
/// of traffic apart.
pub fn generate(
    ns: &Ns,
    gen_: &Generator,
    frame: &[u8],
    ifindex: u32,
    rate: f64,
    dur: Duration,
    cpus: &[usize],
) -> io::Result<(u64, Duration)> {
    let per_cpu = rate / cpus.len() as f64;
    let t0 = Instant::now();
    let results: Vec<io::Result<u64>> = thread::scope(|s| {
        let handles: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> io::Result<u64> {
                    ns.run(|| -> io::Result<u64> {
                        pin_thread(cpu);
                        let mut sent = 0u64;
                        let mut chunk: u32 = 131_072;
                        let min_chunk = (per_cpu * 0.05).max(1.0) as u64;
                        loop {
                            let el = t0.elapsed();
                            if el >= dur {
                                return Ok(sent);
                            }
                            if per_cpu <= 0.0 {
                                let c = Instant::now();
                                gen_.send(frame, ifindex, chunk)?;
                                sent += u64::from(chunk);
                                let fps = f64::from(chunk) / c.elapsed().as_secs_f64().max(1e-6);
                                chunk = (fps * 0.5).clamp(16_384.0, 16_777_216.0) as u32;
                            } else {
                                let due = (per_cpu * el.as_secs_f64()) as u64;
                                if due < sent + min_chunk {
                                    thread::sleep(Duration::from_millis(1));
                                    continue;
                                }
                                let n = (due - sent).min(1 << 24) as u32;
                                gen_.send(frame, ifindex, n)?;
                                sent += u64::from(n);
                            }
                        }
                    })?
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("generator thread panicked")))
            })
            .collect()
    });
    let el = t0.elapsed();
    let mut sent = 0;
    for r in results {
        sent += r?;
    }
    Ok((sent, el))
}
