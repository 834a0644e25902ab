//! Which glibc an executable needs: the `GLIBC_x.y` versions in its ELF version-needs section
//! (`.gnu.version_r`), read straight from the file so `procfwk package` can refuse a binary that would not
//! start on the Functions host image, without binutils.

use std::fmt;
use std::str::FromStr;

/// A glibc symbol version such as `GLIBC_2.28`, compared numerically (2.9 < 2.17 < 2.28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlibcVersion {
    pub major: u32,
    pub minor: u32,
}

impl GlibcVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parse the name of a version-needs entry: `GLIBC_2.28` (a third component, `GLIBC_2.3.4`, is
    /// ignored; `GLIBC_PRIVATE` and other libraries' versions are not glibc versions).
    pub fn from_symbol_version(name: &str) -> Option<Self> {
        name.strip_prefix("GLIBC_").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for GlibcVersion {
    type Err = String;

    /// `2.28` (or `2.3.4`, read as 2.3).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, String> {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{s:?} is not a glibc version like 2.28"))
        };
        Ok(Self::new(next()?, next()?))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("the ELF file is truncated or malformed ({0})")]
    Malformed(&'static str),
}

/// What an executable needs from shared libraries: `(library, version name)` pairs, e.g.
/// `("libc.so.6", "GLIBC_2.28")`. Empty for a static executable.
pub fn version_needs(elf: &[u8]) -> Result<Vec<(String, String)>, ElfError> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf64);
    }
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian.
    if elf[4] != 2 || elf[5] != 1 {
        return Err(ElfError::NotElf64);
    }
    let section_offset = u64_at(elf, 0x28)? as usize;
    let entry_size = u16_at(elf, 0x3a)? as usize;
    let count = u16_at(elf, 0x3c)? as usize;
    if count == 0 {
        return Err(ElfError::Malformed("no section headers"));
    }
    if entry_size < 64 {
        return Err(ElfError::Malformed("section header size"));
    }
    let section = |index: usize| -> Result<Section, ElfError> {
        let base = index
            .checked_mul(entry_size)
            .and_then(|o| o.checked_add(section_offset))
            .ok_or(ElfError::Malformed("section header offset"))?;
        Ok(Section {
            kind: u32_at(elf, base + 4)?,
            offset: u64_at(elf, base + 24)? as usize,
            size: u64_at(elf, base + 32)? as usize,
            link: u32_at(elf, base + 40)? as usize,
            info: u32_at(elf, base + 44)? as usize,
        })
    };
    const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
    let mut out = Vec::new();
    for index in 0..count {
        let needs = section(index)?;
        if needs.kind != SHT_GNU_VERNEED {
            continue;
        }
        let strings = section(needs.link)?;
        let text = elf
            .get(strings.offset..strings.offset.saturating_add(strings.size))
            .ok_or(ElfError::Malformed("string table"))?;
        let name = |at: u32| -> Result<String, ElfError> {
            let start = at as usize;
            let rest = text.get(start..).ok_or(ElfError::Malformed("string"))?;
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or(ElfError::Malformed("unterminated string"))?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        // Verneed entries (file + a chain of Vernaux version names), `info` of them chained by vn_next.
        let mut at = needs.offset;
        for _ in 0..needs.info {
            let file = name(u32_at(elf, at + 4)?)?;
            let aux_count = u16_at(elf, at + 2)?;
            let mut aux = at + u32_at(elf, at + 8)? as usize;
            for _ in 0..aux_count {
                out.push((file.clone(), name(u32_at(elf, aux + 8)?)?));
                let next = u32_at(elf, aux + 12)? as usize;
                if next == 0 {
                    break;
                }
                aux += next;
            }
            let next = u32_at(elf, at + 12)? as usize;
            if next == 0 {
                break;
            }
            at += next;
        }
    }
    Ok(out)
}

/// The newest `GLIBC_x.y` the executable needs; `None` when it needs none (static, or not glibc).
pub fn max_glibc(elf: &[u8]) -> Result<Option<GlibcVersion>, ElfError> {
    Ok(version_needs(elf)?
        .iter()
        .filter_map(|(_, v)| GlibcVersion::from_symbol_version(v))
        .max())
}

struct Section {
    kind: u32,
    offset: usize,
    size: usize,
    link: usize,
    info: usize,
}

fn bytes<const N: usize>(elf: &[u8], at: usize) -> Result<[u8; N], ElfError> {
    elf.get(at..at.saturating_add(N))
        .and_then(|b| b.try_into().ok())
        .ok_or(ElfError::Malformed("read past the end"))
}

fn u16_at(elf: &[u8], at: usize) -> Result<u16, ElfError> {
    bytes(elf, at).map(u16::from_le_bytes)
}

fn u32_at(elf: &[u8], at: usize) -> Result<u32, ElfError> {
    bytes(elf, at).map(u32::from_le_bytes)
}

fn u64_at(elf: &[u8], at: usize) -> Result<u64, ElfError> {
    bytes(elf, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        let v = |s: &str| s.parse::<GlibcVersion>().unwrap_or(GlibcVersion::new(0, 0));
        assert!(v("2.9") < v("2.17"));
        assert!(v("2.17") < v("2.28"));
        assert_eq!(v("2.3.4"), GlibcVersion::new(2, 3));
        assert!("two".parse::<GlibcVersion>().is_err());
        assert_eq!(
            GlibcVersion::from_symbol_version("GLIBC_2.34"),
            Some(GlibcVersion::new(2, 34))
        );
        assert_eq!(GlibcVersion::from_symbol_version("GLIBC_PRIVATE"), None);
        assert_eq!(GlibcVersion::from_symbol_version("GCC_3.0"), None);
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert_eq!(max_glibc(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
        let mut truncated = b"\x7fELF\x02\x01".to_vec();
        truncated.resize(64, 0);
        assert!(max_glibc(&truncated).is_err());
    }

    #[test]
    fn reads_the_running_test_binary() {
        // This test executable is a glibc ELF on the Linux build hosts we support.
        let me = std::env::current_exe().and_then(std::fs::read);
        if let Ok(bytes) = me {
            let needs = version_needs(&bytes).unwrap_or_default();
            assert!(needs.iter().any(|(file, _)| file.starts_with("libc.so")));
            assert!(max_glibc(&bytes).ok().flatten() >= Some(GlibcVersion::new(2, 2)));
        }
    }
}
