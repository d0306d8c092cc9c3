//! A small reader of the BTF type section of an eBPF object: enough to list every struct
//! with the offset and size of each member, so tests can check the `#[repr(C)]` layouts of
//! `pipec-ebpf-common` against what clang actually compiled.

use std::collections::BTreeMap;

use object::{Object, ObjectSection};

/// A struct as BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfStruct {
    /// Size in bytes.
    pub size: u32,
    /// Members in declaration order: name, byte offset, byte size.
    pub members: Vec<(String, u32, u32)>,
}

struct Type {
    kind: u32,
    size_or_type: u32,
    /// ARRAY: (element type, element count).
    array: Option<(u32, u32)>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("BTF truncated at {off}"))
}

fn name_at(strings: &[u8], off: u32) -> String {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// Every named struct in the `.BTF` section of an ELF object (little-endian BPF).
pub fn structs(object_bytes: &[u8]) -> Result<BTreeMap<String, BtfStruct>, String> {
    let file = object::File::parse(object_bytes).map_err(|e| e.to_string())?;
    let section = file
        .section_by_name(".BTF")
        .ok_or("the object has no .BTF section")?;
    let btf = section.data().map_err(|e| e.to_string())?;
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != 0xeb9f {
        return Err("bad BTF magic (big-endian objects are not supported)".into());
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let str_off = u32_at(btf, 16)? as usize;
    let str_len = u32_at(btf, 20)? as usize;
    let types_bytes = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or("BTF types out of range")?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or("BTF strings out of range")?;

    // Type ids start at 1; id 0 is void.
    let mut types = vec![Type {
        kind: 0,
        size_or_type: 0,
        array: None,
    }];
    let mut raw_structs = Vec::new();
    let mut off = 0;
    while off < types_bytes.len() {
        let name_off = u32_at(types_bytes, off)?;
        let info = u32_at(types_bytes, off + 4)?;
        let size_or_type = u32_at(types_bytes, off + 8)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        off += 12;
        let mut array = None;
        match kind {
            1 | 14 | 17 => off += 4,
            3 => {
                array = Some((u32_at(types_bytes, off)?, u32_at(types_bytes, off + 8)?));
                off += 12;
            }
            4 | 5 => {
                let mut members = Vec::new();
                for i in 0..vlen {
                    let m = off + i * 12;
                    let bits = u32_at(types_bytes, m + 8)?;
                    let bit_off = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    members.push((
                        name_at(strings, u32_at(types_bytes, m)?),
                        u32_at(types_bytes, m + 4)?,
                        bit_off,
                    ));
                }
                if kind == 4 {
                    raw_structs.push((name_at(strings, name_off), size_or_type, members));
                }
                off += 12 * vlen;
            }
            6 | 13 => off += 8 * vlen,
            15 | 19 => off += 12 * vlen,
            2 | 7..=12 | 16 | 18 => {}
            k => return Err(format!("unknown BTF kind {k}")),
        }
        types.push(Type {
            kind,
            size_or_type,
            array,
        });
    }

    let size_of = |mut id: u32| -> Result<u32, String> {
        let mut factor = 1u32;
        for _ in 0..64 {
            let t = types
                .get(id as usize)
                .ok_or_else(|| format!("bad BTF type id {id}"))?;
            match t.kind {
                1 | 4 | 5 | 6 | 15 | 16 | 19 => return Ok(factor * t.size_or_type),
                2 => return Ok(factor * 8),
                3 => {
                    let (elem, n) = t.array.unwrap_or((0, 0));
                    factor *= n;
                    id = elem;
                }
                8..=11 | 18 => id = t.size_or_type,
                k => return Err(format!("type {id} of kind {k} has no size")),
            }
        }
        Err("BTF type chain too deep".into())
    };

    let mut out = BTreeMap::new();
    for (name, size, members) in raw_structs {
        if name.is_empty() {
            continue;
        }
        let mut ms = Vec::new();
        for (mname, ty, bit_off) in members {
            ms.push((mname, bit_off / 8, size_of(ty)?));
        }
        out.insert(name, BtfStruct { size, members: ms });
    }
    Ok(out)
}
