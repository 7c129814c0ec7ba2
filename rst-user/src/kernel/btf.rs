//! Kernel BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and enum values.

use btf_rs::{Btf, Type};

use super::{KernelError, VMLINUX_BTF};

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
