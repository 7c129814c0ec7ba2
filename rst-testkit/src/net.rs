//! Network plumbing around [`rst_user::netns`]: MAC addresses, GRO, the TCP MIB of a
//! namespace, a multi-queue veth pair, and RST frames addressed across a pair.

use std::{collections::BTreeMap, fs, io, process::Command};

use rst_user::netns::{Ns, Pair};

use crate::frames::Frame;

/// The MAC address of `ifname` inside `ns`.
pub fn mac_of(ns: &Ns, ifname: &str) -> io::Result<[u8; 6]> {
    let out = ns.output("cat", &[&format!("/sys/class/net/{ifname}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::other(format!(
            "cannot read the MAC of {ifname}: {text:?}"
        )));
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("MAC of {ifname}: {text:?}: {e}"),
            )
        })?;
    }
    Ok(mac)
}

/// Turns GRO on for `ifname` (legacy ETHTOOL_SGRO ioctl). On a veth, GRO gives the
/// receiving end a NAPI context, which XDP_TX/redirect into the pair needs when no XDP
/// program is attached to the receiver. Call from a thread inside the namespace.
pub fn set_gro(ifname: &str) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    const ETHTOOL_SGRO: u32 = 0x2c;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    let n = ifname.len().min(15);
    req.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
    // SAFETY: plain socket/ioctl/close with valid pointers.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// `Tcp:` counters of the calling thread's network namespace (`/proc/thread-self/net/snmp`;
/// cheaper than [`Ns::nstat`], for measurements). Call from a thread inside the namespace.
pub fn tcp_mib() -> io::Result<BTreeMap<String, u64>> {
    let text = fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(h), Some(v)) = (tcp.next(), tcp.next()) else {
        return Err(io::Error::other("no Tcp: lines in snmp"));
    };
    Ok(h.split_whitespace()
        .zip(v.split_whitespace())
        .skip(1)
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

/// Replaces the pair's veth with one that has `queues` receive and transmit queues, so
/// that traffic generated on several CPUs is received on as many (a veth picks the
/// peer's queue by the sending CPU), with the pair's IPv4 addresses, and turns GRO on at
/// the `b` end (see [`set_gro`]).
pub fn make_multiqueue(pair: &Pair, queues: usize) -> io::Result<()> {
    let q = queues.to_string();
    pair.a.ip(&["link", "del", &pair.a_if])?;
    let out = Command::new("ip")
        .args([
            "link",
            "add",
            &pair.a_if,
            "netns",
            &pair.a.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &pair.b_if,
            "netns",
            &pair.b.name,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip link add (multi-queue veth): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    for (ns, ifn, v4) in [
        (&pair.a, &pair.a_if, pair.a4),
        (&pair.b, &pair.b_if, pair.b4),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifn])?;
        ns.ip(&["link", "set", ifn, "up"])?;
    }
    let b_if = pair.b_if.clone();
    pair.b.run(|| set_gro(&b_if))??;
    Ok(())
}

/// An IPv4 segment with `flags` from the pair's `a` end to a closed port (9, discard) on
/// its `b` end, with correct checksums and the given MACs: for an RST the receiving TCP
/// stack validates it, finds no socket, and drops it without answering (an RST is never
/// answered).
pub fn rst_to(pair: &Pair, dst_mac: [u8; 6], src_mac: [u8; 6], sport: u16, flags: u8) -> Vec<u8> {
    let mut f = Frame::tcp4(flags)
        .with_ipv4(|ip| {
            ip.src = pair.a4.octets();
            ip.dst = pair.b4.octets();
        })
        .with_tcp(|t| {
            t.sport = sport;
            t.dport = 9;
        });
    f.dst_mac = dst_mac;
    f.src_mac = src_mac;
    f.build().bytes
}
