//! A small reader of kernel BTF (`/sys/kernel/btf/vmlinux`): just what rstmon needs.
//!
//! Parsing the whole of a kernel's BTF into types (what general BTF libraries do) costs
//! about 110 ms and 40 MiB for the 5 MB of a 6.18 kernel. rstmon needs a handful of
//! types, so this reader makes one pass over the type section that only records where
//! each type starts (4 bytes per type, to follow type ids) and the ids of the few
//! names it was asked for; everything else is decoded on demand, from the raw bytes.
//! The file is read once and dropped with the reader.
//!
//! Format: `Documentation/bpf/btf.rst` — a header, a type section (records of
//! `struct btf_type` followed by kind-specific data), a string section. Type ids count
//! from 1 in the order of the records; 0 is `void`.

use std::{fs, path::Path};

/// `struct btf_type` kinds (include/uapi/linux/btf.h).
pub mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

pub const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// Nesting of anonymous members and of modifiers followed before giving up (a loop in
/// malformed input).
const MAX_DEPTH: u32 = 32;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (magic {0:#06x}, want 0xeb9f in this machine's byte order)")]
    Magic(u16),
    #[error("truncated ({0})")]
    Truncated(&'static str),
    #[error("type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("string offset {0} out of range")]
    BadString(u32),
    #[error("type id {0} out of range")]
    BadType(u32),
}

/// One `struct btf_type`, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Type {
    pub id: u32,
    pub kind: u32,
    pub name_off: u32,
    pub vlen: u32,
    pub kind_flag: bool,
    /// `size` (int, struct, union, enum) or `type` (ptr, typedef, modifiers, func...).
    pub size_or_type: u32,
    /// Where its kind-specific data starts, in the file.
    data: usize,
}

/// Kernel BTF, indexed for the names given to [`Btf::parse`].
pub struct Btf {
    bytes: Vec<u8>,
    types: usize,
    strs: usize,
    strs_len: usize,
    /// Offset in the type section of type `id`, at `id - 1`.
    offsets: Vec<u32>,
    /// The struct, union, enum and typedef types named in `wanted`: (name, kind, id).
    named: Vec<(String, u32, u32)>,
}

fn u32_at(b: &[u8], pos: usize) -> Option<u32> {
    b.get(pos..pos.checked_add(4)?)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Bytes of kind-specific data after a `struct btf_type` of `kind` with `vlen` items.
fn extra_len(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = vlen as usize;
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        _ => return None,
    })
}

impl Btf {
    /// Reads the BTF file at `path` and indexes it for `wanted`.
    pub fn read(path: &Path, wanted: &[&str]) -> Result<Self, ReadError> {
        let bytes = fs::read(path).map_err(ReadError::Io)?;
        Self::parse(bytes, wanted).map_err(ReadError::Parse)
    }

    /// Indexes raw BTF in one pass over its types: where every type starts, and the ids
    /// of the structs, unions, enums and typedefs named in `wanted`.
    pub fn parse(bytes: Vec<u8>, wanted: &[&str]) -> Result<Self, BtfError> {
        let hdr = bytes
            .get(..HEADER_LEN)
            .ok_or(BtfError::Truncated("header"))?;
        let magic = u16::from_ne_bytes([hdr[0], hdr[1]]);
        if magic != BTF_MAGIC {
            return Err(BtfError::Magic(magic));
        }
        let field = |i: usize| u32_at(hdr, 4 + 4 * i).unwrap_or(0) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(0), field(1), field(2), field(3), field(4));
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Truncated("header"));
        }
        let types = hdr_len + type_off;
        let strs = hdr_len + str_off;
        if types + type_len > bytes.len() {
            return Err(BtfError::Truncated("type section"));
        }
        if strs + str_len > bytes.len() {
            return Err(BtfError::Truncated("string section"));
        }
        let mut btf = Self {
            bytes,
            types,
            strs,
            strs_len: str_len,
            offsets: Vec::with_capacity(type_len / 32),
            named: Vec::new(),
        };
        let mut off = 0usize;
        while off < type_len {
            let id = btf.offsets.len() as u32 + 1;
            let (name_off, info) = match (
                u32_at(&btf.bytes, types + off),
                u32_at(&btf.bytes, types + off + 4),
            ) {
                (Some(n), Some(i)) if off + TYPE_LEN <= type_len => (n, i),
                _ => return Err(BtfError::Truncated("type record")),
            };
            let kind = (info >> 24) & 0x1f;
            let extra = extra_len(kind, info & 0xffff).ok_or(BtfError::UnknownKind { id, kind })?;
            btf.offsets.push(off as u32);
            if name_off != 0
                && matches!(
                    kind,
                    kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::TYPEDEF
                )
                && let Some(w) = wanted.iter().find(|w| btf.name_is(name_off, w))
            {
                btf.named.push(((*w).to_string(), kind, id));
            }
            off += TYPE_LEN + extra;
        }
        if off != type_len {
            return Err(BtfError::Truncated("last type record"));
        }
        Ok(btf)
    }

    /// Number of types (the largest id).
    pub fn type_count(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the string at `off` is exactly `s`.
    fn name_is(&self, off: u32, s: &str) -> bool {
        let start = self.strs + off as usize;
        let end = start + s.len();
        (off as usize) + s.len() < self.strs_len
            && &self.bytes[start..end] == s.as_bytes()
            && self.bytes[end] == 0
    }

    /// The string at `off` of the string section.
    pub fn name(&self, off: u32) -> Result<&str, BtfError> {
        let strs = &self.bytes[self.strs..self.strs + self.strs_len];
        let rest = strs.get(off as usize..).ok_or(BtfError::BadString(off))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::BadString(off))?;
        std::str::from_utf8(&rest[..len]).map_err(|_| BtfError::BadString(off))
    }

    /// Type `id` (not 0, `void`).
    pub fn type_by_id(&self, id: u32) -> Result<Type, BtfError> {
        let off = *id
            .checked_sub(1)
            .and_then(|i| self.offsets.get(i as usize))
            .ok_or(BtfError::BadType(id))? as usize;
        let pos = self.types + off;
        let b = &self.bytes;
        let (Some(name_off), Some(info), Some(size_or_type)) =
            (u32_at(b, pos), u32_at(b, pos + 4), u32_at(b, pos + 8))
        else {
            return Err(BtfError::BadType(id));
        };
        Ok(Type {
            id,
            kind: (info >> 24) & 0x1f,
            name_off,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type,
            data: pos + TYPE_LEN,
        })
    }

    /// The first indexed type named `name` of one of `kinds`.
    pub fn find(&self, name: &str, kinds: &[u32]) -> Option<Type> {
        self.named
            .iter()
            .filter(|(n, k, _)| n == name && kinds.contains(k))
            .find_map(|(_, _, id)| self.type_by_id(*id).ok())
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags) from type
    /// `id`; `None` for `void`.
    pub fn resolve(&self, mut id: u32) -> Result<Option<Type>, BtfError> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(None);
            }
            let t = self.type_by_id(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Ok(Some(t)),
            }
        }
        Err(BtfError::BadType(id))
    }

    /// The `i`-th 12-byte member of a struct or union: (name_off, type, bit offset).
    fn member(&self, t: &Type, i: u32) -> Option<(u32, u32, u32)> {
        let pos = t.data + 12 * i as usize;
        let (name_off, ty, offset) = (
            u32_at(&self.bytes, pos)?,
            u32_at(&self.bytes, pos + 4)?,
            u32_at(&self.bytes, pos + 8)?,
        );
        // With kind_flag, the top 8 bits are the bitfield size.
        let bit = if t.kind_flag {
            offset & 0xff_ffff
        } else {
            offset
        };
        Some((name_off, ty, bit))
    }

    /// The member `name` of struct/union `t`, looking through anonymous structs and
    /// unions: (bit offset, member type id).
    fn find_member(&self, t: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > MAX_DEPTH || !matches!(t.kind, kind::STRUCT | kind::UNION) {
            return None;
        }
        for i in 0..t.vlen {
            let (name_off, ty, bit) = self.member(t, i)?;
            if name_off != 0 {
                if self.name_is(name_off, name) {
                    return Some((bit, ty));
                }
                continue;
            }
            if let Ok(Some(inner)) = self.resolve(ty)
                && let Some((o, found)) = self.find_member(&inner, name, depth + 1)
            {
                return Some((bit + o, found));
            }
        }
        None
    }

    /// Bit offset of a member path in a struct found by name, e.g.
    /// `["__sk_common", "skc_state"]` in `sock`, through anonymous members and into
    /// named struct members; bitfields included. `None` when any step is missing.
    pub fn member_bit_offset(&self, strukt: &str, path: &[&str]) -> Option<u32> {
        let mut t = self.find(strukt, &[kind::STRUCT, kind::UNION])?;
        let mut total = 0u32;
        for (i, name) in path.iter().enumerate() {
            let (bit, ty) = self.find_member(&t, name, 0)?;
            total = total.checked_add(bit)?;
            if i + 1 < path.len() {
                t = self.resolve(ty).ok()??;
            }
        }
        Some(total)
    }

    /// Members of the enum (or enum64) `name` as (name, value); signed values as their
    /// two's complement.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, u64)>> {
        let t = self.find(name, &[kind::ENUM, kind::ENUM64])?;
        let mut out = Vec::with_capacity(t.vlen as usize);
        for i in 0..t.vlen as usize {
            let (name_off, value) = if t.kind == kind::ENUM {
                let pos = t.data + 8 * i;
                let v = u32_at(&self.bytes, pos + 4)?;
                let v = if t.kind_flag {
                    v as i32 as i64 as u64
                } else {
                    v as u64
                };
                (u32_at(&self.bytes, pos)?, v)
            } else {
                let pos = t.data + 12 * i;
                let lo = u32_at(&self.bytes, pos + 4)? as u64;
                let hi = u32_at(&self.bytes, pos + 8)? as u64;
                (u32_at(&self.bytes, pos)?, hi << 32 | lo)
            };
            out.push((self.name(name_off).ok()?.to_string(), value));
        }
        Some(out)
    }

    /// Parameters of the function prototype that typedef `name` points to
    /// (`typedef void (*btf_trace_x)(void *, ...)`), as type ids.
    pub fn func_proto_params(&self, name: &str) -> Option<Vec<u32>> {
        let td = self.find(name, &[kind::TYPEDEF])?;
        let ptr = self.resolve(td.size_or_type).ok()??;
        if ptr.kind != kind::PTR {
            return None;
        }
        let proto = self.resolve(ptr.size_or_type).ok()??;
        if proto.kind != kind::FUNC_PROTO {
            return None;
        }
        (0..proto.vlen as usize)
            .map(|i| u32_at(&self.bytes, proto.data + 8 * i + 4))
            .collect()
    }

    /// Arguments of the raw tracepoint `tp`, from the typedef `btf_trace_<tp>` every
    /// tracepoint has in BTF: the prototype's parameters after its leading `void *`
    /// (the probe's data pointer). `None` when the kernel has no such tracepoint.
    pub fn tracepoint_args(&self, tp: &str) -> Option<usize> {
        let params = self.func_proto_params(&format!("btf_trace_{tp}"))?;
        let (first, rest) = params.split_first()?;
        let void_ptr = self
            .resolve(*first)
            .ok()
            .flatten()
            .is_some_and(|t| t.kind == kind::PTR && t.size_or_type == 0);
        void_ptr.then_some(rest.len())
    }
}

/// Why [`Btf::read`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Parse(BtfError),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs by hand: types are added in id order (from 1).
    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u8>,
        strs: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strs: vec![0],
                next_id: 1,
            }
        }

        pub(crate) fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strs.len() as u32;
            self.strs.extend_from_slice(s.as_bytes());
            self.strs.push(0);
            off
        }

        fn put(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_ne_bytes());
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, st: u32) -> u32 {
            let n = self.str(name);
            self.put(n);
            self.put(kind << 24 | vlen | (kflag as u32) << 31);
            self.put(st);
            self.next_id += 1;
            self.next_id - 1
        }

        pub(crate) fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.head(name, kind::INT, 0, false, bytes);
            self.put(bytes * 8);
            id
        }

        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.head("", kind::PTR, 0, false, to)
        }

        pub(crate) fn modifier(&mut self, kind: u32, name: &str, to: u32) -> u32 {
            self.head(name, kind, 0, false, to)
        }

        pub(crate) fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.head("", kind::ARRAY, 0, false, 0);
            self.put(elem);
            self.put(index);
            self.put(n);
            id
        }

        /// Members: (name, type, bit offset, bitfield size or 0).
        pub(crate) fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let id = self.head(name, kind, members.len() as u32, kflag, size);
            for (n, t, bit, bits) in members {
                let n = self.str(n);
                self.put(n);
                self.put(*t);
                self.put(if kflag { bits << 24 | bit } else { *bit });
            }
            id
        }

        pub(crate) fn enum32(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let id = self.head(name, kind::ENUM, values.len() as u32, true, 4);
            for (n, v) in values {
                let n = self.str(n);
                self.put(n);
                self.put(*v as u32);
            }
            id
        }

        pub(crate) fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
            let id = self.head(name, kind::ENUM64, values.len() as u32, false, 8);
            for (n, v) in values {
                let n = self.str(n);
                self.put(n);
                self.put(*v as u32);
                self.put((*v >> 32) as u32);
            }
            id
        }

        /// Params: (name, type).
        pub(crate) fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let id = self.head("", kind::FUNC_PROTO, params.len() as u32, false, ret);
            for (n, t) in params {
                let n = self.str(n);
                self.put(n);
                self.put(*t);
            }
            id
        }

        /// Kinds whose records the reader only has to step over.
        pub(crate) fn filler(&mut self) {
            let int = self.int("int", 4);
            let f = self.func_proto(int, &[("a", int)]);
            self.head("main", kind::FUNC, 1, false, f);
            let v = self.head("jiffies", kind::VAR, 0, false, int);
            self.put(1);
            let ds = self.head(".data", kind::DATASEC, 1, false, 8);
            self.put(v);
            self.put(0);
            self.put(4);
            self.head("double", kind::FLOAT, 0, false, 8);
            self.head("tag", kind::DECL_TAG, 0, false, ds);
            self.put(u32::MAX);
            self.head("user", kind::TYPE_TAG, 0, false, int);
            self.head("fwd", kind::FWD, 0, false, 0);
        }

        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
            for v in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strs.len() as u32,
            ] {
                out.extend_from_slice(&v.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strs);
            out
        }
    }

    /// A miniature of the kernel's `struct sock` family, with an anonymous union, a
    /// bitfield struct behind a typedef and const, enums, an enum64 and the tracepoint
    /// typedefs: `tcp_send_reset` with `send_args` arguments, `enum sk_rst_reason` only
    /// with `reasons`.
    pub(crate) fn kernel(send_args: usize, reasons: bool) -> Vec<u8> {
        let mut b = Builder::new();
        b.filler();
        let u8t = b.int("unsigned char", 1);
        let u16t = b.int("short unsigned int", 2);
        let u32t = b.int("unsigned int", 4);
        let u64t = b.int("long unsigned int", 8);
        let vol_u8 = b.modifier(kind::VOLATILE, "", u8t);
        let in6 = b.array(u8t, u32t, 16);
        let pair = b.composite(
            kind::STRUCT,
            "",
            8,
            &[("skc_daddr", u32t, 0, 0), ("skc_rcv_saddr", u32t, 32, 0)],
        );
        let anon = b.composite(
            kind::UNION,
            "",
            8,
            &[("skc_addrpair", u64t, 0, 0), ("", pair, 0, 0)],
        );
        let common = b.composite(
            kind::STRUCT,
            "sock_common",
            136,
            &[
                ("", anon, 0, 0),
                ("skc_dport", u16t, 96, 0),
                ("skc_num", u16t, 112, 0),
                ("skc_family", u16t, 128, 0),
                ("skc_state", vol_u8, 144, 0),
                ("skc_v6_daddr", in6, 448, 0),
                ("skc_v6_rcv_saddr", in6, 576, 0),
                ("skc_flags", u64t, 768, 0),
            ],
        );
        let sock = b.composite(
            kind::STRUCT,
            "sock",
            800,
            &[
                ("__sk_common", common, 0, 0),
                ("sk_lingertime", u64t, 4608, 0),
            ],
        );
        b.composite(
            kind::STRUCT,
            "inet_sock",
            900,
            &[
                ("sk", sock, 0, 0),
                ("inet_saddr", u32t, 6464, 0),
                ("inet_sport", u16t, 6512, 0),
            ],
        );
        let opts = b.composite(
            kind::STRUCT,
            "tcp_options_received",
            4,
            &[("saw_tstamp", u8t, 16, 1), ("tstamp_ok", u8t, 17, 1)],
        );
        let opts_td = b.modifier(kind::TYPEDEF, "tcp_opts_t", opts);
        let opts_const = b.modifier(kind::CONST, "", opts_td);
        b.composite(
            kind::STRUCT,
            "tcp_sock",
            2000,
            &[("inet_conn", u64t, 0, 0), ("rx_opt", opts_const, 13936, 0)],
        );
        // A forward declaration of the same name must not shadow the struct.
        b.modifier(kind::FWD, "sk_buff", 0);
        b.composite(
            kind::STRUCT,
            "sk_buff",
            232,
            &[
                ("len", u32t, 896, 0),
                ("transport_header", u16t, 1424, 0),
                ("network_header", u16t, 1440, 0),
                ("head", u64t, 1536, 0),
                ("data", u64t, 1600, 0),
            ],
        );
        b.enum32("sock_flags", &[("SOCK_DEAD", 0), ("SOCK_LINGER", 4)]);
        b.enum32("neg", &[("MINUS", -2)]);
        b.enum64("big", &[("LARGE", 1 << 40)]);
        let reason = if reasons {
            b.enum32(
                "sk_rst_reason",
                &[
                    ("SK_RST_REASON_NOT_SPECIFIED", 0),
                    ("SK_RST_REASON_NO_SOCKET", 1),
                ],
            )
        } else {
            u32t
        };
        let void_ptr = b.ptr(0);
        let sock_ptr = b.ptr(sock);
        let send = [
            ("__data", void_ptr),
            ("sk", sock_ptr),
            ("skb", void_ptr),
            ("reason", reason),
        ];
        let proto = b.func_proto(0, &send[..send_args + 1]);
        let p = b.ptr(proto);
        b.modifier(kind::TYPEDEF, "btf_trace_tcp_send_reset", p);
        let proto1 = b.func_proto(0, &[("__data", void_ptr), ("sk", sock_ptr)]);
        let p1 = b.ptr(proto1);
        b.modifier(kind::TYPEDEF, "btf_trace_tcp_receive_reset", p1);
        b.build()
    }

    pub(crate) fn sample() -> Vec<u8> {
        kernel(3, true)
    }

    const WANTED: &[&str] = &[
        "sock",
        "sk_buff",
        "tcp_sock",
        "sock_flags",
        "sk_rst_reason",
        "neg",
        "big",
        "btf_trace_tcp_send_reset",
        "btf_trace_tcp_receive_reset",
    ];

    #[test]
    fn members_through_anonymous_unions_typedefs_and_bitfields() {
        let btf = Btf::parse(sample(), WANTED).unwrap();
        let byte = |s, p: &[&str]| btf.member_bit_offset(s, p).map(|b| b / 8);
        assert_eq!(byte("sock", &["__sk_common", "skc_state"]), Some(18));
        assert_eq!(byte("sock", &["__sk_common", "skc_family"]), Some(16));
        // Inside the anonymous struct inside the anonymous union.
        assert_eq!(byte("sock", &["__sk_common", "skc_rcv_saddr"]), Some(4));
        assert_eq!(byte("sock", &["__sk_common", "skc_daddr"]), Some(0));
        assert_eq!(byte("sock", &["__sk_common", "skc_v6_rcv_saddr"]), Some(72));
        assert_eq!(byte("sock", &["sk_lingertime"]), Some(576));
        assert_eq!(byte("sock", &["sk_flags"]), None);
        assert_eq!(byte("sock", &["__sk_common", "nope"]), None);
        assert_eq!(byte("sk_buff", &["head"]), Some(192));
        assert_eq!(byte("sk_buff", &["len"]), Some(112));
        assert_eq!(
            btf.member_bit_offset("tcp_sock", &["rx_opt", "saw_tstamp"]),
            Some(13952)
        );
        assert_eq!(
            btf.member_bit_offset("tcp_sock", &["rx_opt", "tstamp_ok"]),
            Some(13953)
        );
        // Not asked for: not indexed.
        assert_eq!(btf.member_bit_offset("sock_common", &["skc_num"]), None);
    }

    #[test]
    fn enums_and_tracepoint_arity() {
        let btf = Btf::parse(sample(), WANTED).unwrap();
        let flags = btf.enum_values("sock_flags").unwrap();
        assert_eq!(flags[1], ("SOCK_LINGER".to_string(), 4));
        assert_eq!(
            btf.enum_values("neg").unwrap(),
            vec![("MINUS".to_string(), -2i64 as u64)]
        );
        assert_eq!(
            btf.enum_values("big").unwrap(),
            vec![("LARGE".to_string(), 1 << 40)]
        );
        assert_eq!(btf.enum_values("sk_rst_reason").unwrap().len(), 2);
        assert_eq!(btf.enum_values("nope"), None);
        assert_eq!(btf.tracepoint_args("tcp_send_reset"), Some(3));
        assert_eq!(btf.tracepoint_args("tcp_receive_reset"), Some(1));
        assert_eq!(btf.tracepoint_args("tcp_nope"), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = sample();
        assert_eq!(
            Btf::parse(vec![0; 10], WANTED).err(),
            Some(BtfError::Truncated("header"))
        );
        let mut bad_magic = good.clone();
        bad_magic[0] ^= 0xff;
        assert!(matches!(
            Btf::parse(bad_magic, WANTED).err(),
            Some(BtfError::Magic(_))
        ));
        // Every truncation of the blob fails cleanly.
        for len in 0..good.len() {
            assert!(Btf::parse(good[..len].to_vec(), WANTED).is_err(), "{len}");
        }
        // A kind this reader does not know.
        let mut b = Builder::new();
        b.int("int", 4);
        b.head("x", 25, 0, false, 0);
        assert_eq!(
            Btf::parse(b.build(), WANTED).err(),
            Some(BtfError::UnknownKind { id: 2, kind: 25 })
        );
        // A typedef loop resolves to an error.
        let mut b = Builder::new();
        b.modifier(kind::TYPEDEF, "a", 2);
        b.modifier(kind::TYPEDEF, "b", 1);
        let btf = Btf::parse(b.build(), &["a"]).unwrap();
        assert!(btf.resolve(1).is_err());
        assert!(btf.type_by_id(0).is_err());
        assert!(btf.type_by_id(3).is_err());
    }
}
