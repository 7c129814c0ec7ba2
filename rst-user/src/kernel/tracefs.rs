//! tracefs: where it is, and the tracepoint record layouts its `format` files describe.

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use rst_common::{OFF_NONE, TraceOffsets};

use super::KernelError;

const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

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

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_6_18: &str = include_str!("../../tests/data/tcp_send_reset.6.18.format");
    const SEND_6_1: &str = include_str!("../../tests/data/tcp_send_reset.6.1.format");
    const RECV_6_18: &str = include_str!("../../tests/data/tcp_receive_reset.6.18.format");

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
