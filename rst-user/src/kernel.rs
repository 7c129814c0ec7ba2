//! What the running kernel looks like: tracefs, tracepoint record layouts, struct
//! offsets and reset-reason names. Rust eBPF gets no CO-RE relocations, so everything
//! the programs read is located here at start-up and passed in as globals.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use btf_rs::{Btf, Type};
use rst_common::{OFF_NONE, TraceOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0} (needs CAP_SYS_ADMIN)"
    )]
    TracefsMount(io::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format { path: PathBuf, source: io::Error },
    #[error("tracepoint {0} lacks field `{1}`; this kernel's layout is not supported")]
    MissingField(&'static str, &'static str),
    #[error(
        "cannot read kernel BTF at {VMLINUX_BTF}: {0} (rstmon needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    Btf(String),
    #[error("kernel BTF has no {0}")]
    BtfMissing(String),
}

/// Where tracefs is, and whether rstmon had to mount it.
#[derive(Clone, Debug)]
pub struct Tracefs {
    pub path: PathBuf,
    pub mounted_now: bool,
}

/// Finds tracefs, mounting it on /sys/kernel/tracing when no mount exists.
pub fn ensure_tracefs() -> Result<Tracefs, KernelError> {
    for dir in TRACEFS_DIRS {
        if Path::new(dir).join("events").is_dir() {
            return Ok(Tracefs {
                path: dir.into(),
                mounted_now: false,
            });
        }
    }
    let target = TRACEFS_DIRS[0];
    let c_src = CString::new("tracefs").expect("static string");
    let c_dst = CString::new(target).expect("static string");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c_src.as_ptr(),
            c_dst.as_ptr(),
            c_src.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(KernelError::TracefsMount(io::Error::last_os_error()));
    }
    Ok(Tracefs {
        path: target.into(),
        mounted_now: true,
    })
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// A parsed tracefs `format` file: fields by name, and the print format.
#[derive(Clone, Debug, Default)]
pub struct Format {
    pub fields: BTreeMap<String, Field>,
    pub print_fmt: String,
}

/// Parses the text of a tracefs `events/<cat>/<name>/format` file.
pub fn parse_format(text: &str) -> Format {
    let mut fmt = Format::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("print fmt:") {
            fmt.print_fmt = rest.trim().to_string();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = "";
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            } else if decl.is_empty() {
                decl = part;
            }
        }
        // "const void * skbaddr", "__u8 saddr[28]": the name is the last word, minus [..].
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("");
        if let (false, Some(offset), Some(size)) = (name.is_empty(), offset, size) {
            fmt.fields.insert(name.to_string(), Field { offset, size });
        }
    }
    fmt
}

/// Reads and parses the format file of `tcp:<name>`.
pub fn read_format(tracefs: &Path, name: &str) -> Result<Format, KernelError> {
    let path = tracefs.join("events/tcp").join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|source| KernelError::Format { path, source })?;
    Ok(parse_format(&text))
}

/// Reason names from the `__print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, ...)`
/// of the tcp_send_reset print format: the fallback when BTF has no `sk_rst_reason`.
pub fn reasons_from_print_fmt(print_fmt: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Some(start) = print_fmt.find("__print_symbolic(REC->reason") else {
        return out;
    };
    let mut rest = &print_fmt[start..];
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let entry = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        let mut it = entry.splitn(2, ',');
        let (Some(num), Some(name)) = (it.next(), it.next()) else {
            continue;
        };
        if let Ok(n) = num.trim().parse::<u32>() {
            out.insert(n, name.trim().trim_matches('"').to_string());
        }
        if rest.trim_start().starts_with(')') {
            break;
        }
    }
    out
}

/// Layout facts about the running kernel.
#[derive(Clone, Debug)]
pub struct KernelLayout {
    pub offsets: TraceOffsets,
    /// `enum sk_rst_reason` value → name without the `SK_RST_REASON_` prefix.
    pub reasons: BTreeMap<u32, String>,
    /// Whether `tcp:tcp_send_reset` carries a `reason` field (6.10+).
    pub has_reason: bool,
}

fn off(f: Option<&Field>) -> u16 {
    f.map(|f| f.offset).unwrap_or(OFF_NONE)
}

/// Fills the tracepoint part of [`TraceOffsets`] from the two format files.
pub fn tracepoint_offsets(
    send: &Format,
    recv: &Format,
    o: &mut TraceOffsets,
) -> Result<(), KernelError> {
    let s = |n: &str| send.fields.get(n);
    let r = |n: &str| recv.fields.get(n);
    const SR: &str = "tcp:tcp_send_reset";
    const RR: &str = "tcp:tcp_receive_reset";
    o.sr_skbaddr = off(Some(
        s("skbaddr").ok_or(KernelError::MissingField(SR, "skbaddr"))?,
    ));
    o.sr_skaddr = off(Some(
        s("skaddr").ok_or(KernelError::MissingField(SR, "skaddr"))?,
    ));
    o.sr_state = off(Some(
        s("state").ok_or(KernelError::MissingField(SR, "state"))?,
    ));
    o.sr_reason = off(s("reason"));
    let saddr = s("saddr").ok_or(KernelError::MissingField(SR, "saddr"))?;
    o.sr_saddr = saddr.offset;
    o.sr_daddr = off(Some(
        s("daddr").ok_or(KernelError::MissingField(SR, "daddr"))?,
    ));
    if saddr.size >= 28 {
        o.sr_sockaddr = 1;
    } else {
        o.sr_sockaddr = 0;
        o.sr_sport = off(s("sport"));
        o.sr_dport = off(s("dport"));
        o.sr_family = off(s("family"));
        o.sr_saddr_v6 = off(s("saddr_v6"));
        o.sr_daddr_v6 = off(s("daddr_v6"));
    }
    o.rr_skaddr = off(Some(
        r("skaddr").ok_or(KernelError::MissingField(RR, "skaddr"))?,
    ));
    o.rr_sport = off(r("sport"));
    o.rr_dport = off(r("dport"));
    o.rr_family = off(r("family"));
    o.rr_saddr = off(r("saddr"));
    o.rr_daddr = off(r("daddr"));
    o.rr_saddr_v6 = off(r("saddr_v6"));
    o.rr_daddr_v6 = off(r("daddr_v6"));
    Ok(())
}

/// Kernel BTF, with the lookups rstmon needs.
pub struct KernelBtf(Btf);

impl KernelBtf {
    pub fn load() -> Result<Self, KernelError> {
        Btf::from_file(VMLINUX_BTF)
            .map(Self)
            .map_err(|e| KernelError::Btf(e.to_string()))
    }

    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        let types = self.0.resolve_types_by_name(name).ok()?;
        types.into_iter().find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
    }

    /// Follows typedefs and qualifiers down to a struct or union.
    fn as_struct(&self, mut t: Type) -> Option<btf_rs::Struct> {
        for _ in 0..16 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(_)
                | Type::Volatile(_)
                | Type::Const(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let bt = t.as_btf_type()?;
                    t = self.0.resolve_chained_type(bt).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// The member `name` of `s` and its bit offset, looking through anonymous structs and
    /// unions.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        name: &str,
        depth: u32,
    ) -> Option<(u32, btf_rs::Member)> {
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let mname = self.0.resolve_name(m).unwrap_or_default();
            if mname == name {
                return Some((m.bit_offset(), m.clone()));
            }
            if mname.is_empty()
                && let Ok(t) = self.0.resolve_chained_type(m)
                && let Some(inner) = self.as_struct(t)
                && let Some((o, found)) = self.find_member(&inner, name, depth + 1)
            {
                return Some((m.bit_offset() + o, found));
            }
        }
        None
    }

    /// Byte offset of a member path, e.g. `["__sk_common", "skc_state"]` in `sock`.
    pub fn member_offset(&self, strukt: &str, path: &[&str]) -> Result<u16, KernelError> {
        let bits = self.member_bit_offset(strukt, path)?;
        u16::try_from(bits / 8)
            .map_err(|_| KernelError::BtfMissing(format!("struct {strukt}.{}", path.join("."))))
    }

    /// Bit offset of a member path (bitfields included).
    pub fn member_bit_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, KernelError> {
        let missing = || KernelError::BtfMissing(format!("struct {strukt}.{}", path.join(".")));
        let mut s = self.find_struct(strukt).ok_or_else(missing)?;
        let mut total = 0u32;
        for (i, name) in path.iter().enumerate() {
            let (o, m) = self.find_member(&s, name, 0).ok_or_else(missing)?;
            total += o;
            if i + 1 < path.len() {
                // Descend into the named member's struct type.
                let t = self.0.resolve_chained_type(&m).map_err(|_| missing())?;
                s = self.as_struct(t).ok_or_else(missing)?;
            }
        }
        Ok(total)
    }

    /// Members of a C enum as (name, value).
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, u32)>> {
        let types = self.0.resolve_types_by_name(name).ok()?;
        types.into_iter().find_map(|t| match t {
            Type::Enum(e) => Some(
                e.members
                    .iter()
                    .map(|m| (self.0.resolve_name(m).unwrap_or_default(), m.val()))
                    .collect(),
            ),
            _ => None,
        })
    }

    /// Value of one enumerator, searching every enum (e.g. `SOCK_LINGER` of `sock_flags`).
    pub fn enumerator(&self, enum_name: &str, member: &str) -> Option<u32> {
        self.enum_values(enum_name)?
            .into_iter()
            .find(|(n, _)| n == member)
            .map(|(_, v)| v)
    }
}

/// Everything the programs need to know about this kernel.
pub fn probe_layout(tracefs: &Path, btf: &KernelBtf) -> Result<KernelLayout, KernelError> {
    let send = read_format(tracefs, "tcp_send_reset")?;
    let recv = read_format(tracefs, "tcp_receive_reset")?;
    let mut o = TraceOffsets::NONE;
    tracepoint_offsets(&send, &recv, &mut o)?;
    o.sk_state = btf.member_offset("sock", &["__sk_common", "skc_state"])?;
    // sk_flags moved into sock_common (skc_flags) in recent kernels.
    o.sk_flags = btf
        .member_offset("sock", &["sk_flags"])
        .or_else(|_| btf.member_offset("sock", &["__sk_common", "skc_flags"]))?;
    o.sk_lingertime = btf
        .member_offset("sock", &["sk_lingertime"])
        .or_else(|_| btf.member_offset("sock", &["__sk_common", "skc_lingertime"]))?;
    o.skb_head = btf.member_offset("sk_buff", &["head"])?;
    o.skb_data = btf.member_offset("sk_buff", &["data"])?;
    o.skb_len = btf.member_offset("sk_buff", &["len"])?;
    o.skb_transport_header = btf.member_offset("sk_buff", &["transport_header"])?;
    o.sock_linger_bit = btf
        .enumerator("sock_flags", "SOCK_LINGER")
        .ok_or_else(|| KernelError::BtfMissing("enum sock_flags.SOCK_LINGER".into()))?
        as u16;
    // Optional: without them received RSTs in established connections are peer_abort.
    let bit = |field: &str| {
        btf.member_bit_offset("tcp_sock", &["rx_opt", field])
            .ok()
            .and_then(|b| u16::try_from(b).ok())
            .unwrap_or(OFF_NONE)
    };
    o.tp_saw_tstamp_bit = bit("saw_tstamp");
    o.tp_tstamp_ok_bit = bit("tstamp_ok");
    let has_reason = o.sr_reason != OFF_NONE;
    let mut reasons: BTreeMap<u32, String> = btf
        .enum_values("sk_rst_reason")
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (v, n.trim_start_matches("SK_RST_REASON_").to_string()))
        .collect();
    if reasons.is_empty() {
        reasons = reasons_from_print_fmt(&send.print_fmt);
    }
    Ok(KernelLayout {
        offsets: o,
        reasons,
        has_reason,
    })
}

/// `uname -r`.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_6_18: &str = include_str!("../tests/data/tcp_send_reset.6.18.format");
    const SEND_6_1: &str = include_str!("../tests/data/tcp_send_reset.6.1.format");
    const RECV_6_18: &str = include_str!("../tests/data/tcp_receive_reset.6.18.format");

    #[test]
    fn parses_6_18_send_reset() {
        let f = parse_format(SEND_6_18);
        assert_eq!(f.fields["skbaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            f.fields["state"],
            Field {
                offset: 24,
                size: 4
            }
        );
        assert_eq!(
            f.fields["reason"],
            Field {
                offset: 28,
                size: 4
            }
        );
        assert_eq!(
            f.fields["saddr"],
            Field {
                offset: 32,
                size: 28
            }
        );
        assert_eq!(
            f.fields["daddr"],
            Field {
                offset: 60,
                size: 28
            }
        );
        let r = reasons_from_print_fmt(&f.print_fmt);
        assert_eq!(r[&1], "NO_SOCKET");
        assert_eq!(r[&14], "TCP_STATE");
        assert_eq!(r[&24], "ERROR");
    }

    #[test]
    fn offsets_for_6_18_use_sockaddr_layout() {
        let mut o = TraceOffsets::NONE;
        tracepoint_offsets(&parse_format(SEND_6_18), &parse_format(RECV_6_18), &mut o).unwrap();
        assert_eq!(o.sr_sockaddr, 1);
        assert_eq!(
            (o.sr_skbaddr, o.sr_skaddr, o.sr_state, o.sr_reason),
            (8, 16, 24, 28)
        );
        assert_eq!((o.sr_saddr, o.sr_daddr), (32, 60));
        assert_eq!(
            (o.rr_skaddr, o.rr_sport, o.rr_dport, o.rr_family),
            (8, 16, 18, 20)
        );
        assert_eq!(
            (o.rr_saddr, o.rr_daddr, o.rr_saddr_v6, o.rr_daddr_v6),
            (22, 26, 30, 46)
        );
    }

    #[test]
    fn offsets_for_6_1_use_split_layout_and_no_reason() {
        let mut o = TraceOffsets::NONE;
        tracepoint_offsets(&parse_format(SEND_6_1), &parse_format(RECV_6_18), &mut o).unwrap();
        assert_eq!(o.sr_sockaddr, 0);
        assert_eq!(o.sr_reason, OFF_NONE);
        assert_eq!(
            (o.sr_state, o.sr_sport, o.sr_dport, o.sr_family),
            (24, 28, 30, 32)
        );
        assert_eq!(
            (o.sr_saddr, o.sr_daddr, o.sr_saddr_v6, o.sr_daddr_v6),
            (34, 38, 42, 58)
        );
    }

    #[test]
    fn missing_field_is_an_error() {
        let mut o = TraceOffsets::NONE;
        let broken = parse_format("format:\n\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;\n");
        let err = tracepoint_offsets(&broken, &parse_format(RECV_6_18), &mut o).unwrap_err();
        assert!(err.to_string().contains("skbaddr"), "{err}");
    }
}
