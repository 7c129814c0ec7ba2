//! Kernel facts aya 0.14 does not expose.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// How often the kernel skipped this program because another tracing program was
/// running on the same CPU (`bpf_prog_info.recursion_misses`, Linux 5.12+). A tracepoint
/// that fires in a softirq while a tracing program runs in process context on that CPU
/// is not run at all: such resets are counted here instead of being lost silently.
pub fn recursion_misses(prog: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: all-zero is a valid bpf_prog_info.
    let mut info: bpf_prog_info = unsafe { zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr points to an info buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
