//! Readers of the memory images the tests check: LiME v1 range headers and an ELF64 core's
//! PT_LOAD segments (QEMU's `dump-guest-memory`). Over any `Read + Seek`, so the fuzz
//! targets feed them hostile bytes the way a broken capture would.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, Result};

/// LiME v1 headers of an image of `len` bytes: (start, end inclusive, offset of the data).
pub fn lime_ranges<R: Read + Seek>(f: &mut R, len: u64) -> Result<Vec<(u64, u64, u64)>> {
    let mut at = 0u64;
    let mut out = Vec::new();
    while at < len {
        let mut h = [0u8; 32];
        f.seek(SeekFrom::Start(at))?;
        if f.read_exact(&mut h).is_err() {
            bail!("truncated LiME header at {at}");
        }
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let version = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if magic != 0x4C69_4D45 || version != 1 {
            bail!("bad LiME header at {at} (magic {magic:#x}, version {version})");
        }
        let s = u64::from_le_bytes(h[8..16].try_into()?);
        let e = u64::from_le_bytes(h[16..24].try_into()?);
        if h[24..32] != [0u8; 8] || e < s {
            bail!("bad LiME range {s:#x}-{e:#x} at {at}");
        }
        // A hostile end (0..u64::MAX) must not wrap the offset back into the file.
        let Some(next) = (e - s)
            .checked_add(1)
            .and_then(|n| n.checked_add(at + 32))
            .filter(|next| *next <= len)
        else {
            bail!("the LiME range {s:#x}-{e:#x} at {at} runs past the end of the file");
        };
        out.push((s, e, at + 32));
        at = next;
    }
    if at != len {
        bail!("the last LiME range runs past the end of the file");
    }
    Ok(out)
}

/// PT_LOAD segments of an ELF64 core: (paddr, file offset, size in file).
pub fn elf_loads<R: Read + Seek>(f: &mut R) -> Result<Vec<(u64, u64, u64)>> {
    let mut h = [0u8; 64];
    f.read_exact(&mut h)?;
    if &h[0..4] != b"\x7fELF" || h[4] != 2 {
        bail!("not an ELF64 file");
    }
    let phoff = u64::from_le_bytes(h[32..40].try_into()?);
    let phnum = u16::from_le_bytes([h[56], h[57]]) as usize;
    let mut ph = vec![0u8; phnum * 56];
    f.seek(SeekFrom::Start(phoff))?;
    f.read_exact(&mut ph)?;
    Ok(ph
        .chunks(56)
        .filter(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == 1)
        .map(|p| {
            let word = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap_or([0; 8]));
            (word(24), word(8), word(32))
        })
        .collect())
}
