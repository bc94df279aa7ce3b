//! The files a process has mapped: inode, size, ELF build-id and SHA-256 of each, so that an
//! analyst can match a core's libraries to known binaries and spot a replaced or deleted one.
//!
//! Files are opened through `/proc/PID/map_files/START-END`, which reaches the very file that
//! is mapped even after it was deleted or replaced on disk; the path is the fallback. They are
//! read with `pread`, never mapped: a file truncated under us must give an error, not SIGBUS.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use serde::Serialize;

use super::maps::Mapping;

/// One mapped file, as the manifest lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MappedFile {
    pub path: String,
    /// The kernel says the file was deleted (or replaced) after it was mapped.
    pub deleted: bool,
    pub device: String,
    pub inode: u64,
    pub size: Option<u64>,
    pub build_id: Option<String>,
    pub sha256: Option<String>,
    /// Lowest address the file is mapped at.
    pub mapped_at: String,
    /// Why a field is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// (device, inode, mtime seconds, mtime nanoseconds): a file as it was when hashed.
type FileKey = (u64, u64, i64, i64);

/// Identities already computed, so that `--all` hashes libc once, not once per process.
#[derive(Default)]
pub struct FileCache {
    by_key: HashMap<FileKey, (Option<String>, Option<String>)>,
}

/// Reads the GNU build-id from an ELF file's PT_NOTE segments.
pub fn build_id(f: &File) -> Option<String> {
    let mut head = vec![0u8; 64];
    f.read_exact_at(&mut head, 0).ok()?;
    let h = goblin::elf::Elf::parse_header(&head).ok()?;
    let ctx = goblin::container::Ctx::new(
        if h.e_ident[4] == 2 {
            goblin::container::Container::Big
        } else {
            goblin::container::Container::Little
        },
        if h.e_ident[5] == 2 {
            goblin::container::Endian::Big
        } else {
            goblin::container::Endian::Little
        },
    );
    let phsize = usize::from(h.e_phentsize) * usize::from(h.e_phnum);
    if phsize == 0 || phsize > 1 << 20 {
        return None;
    }
    let mut ph = vec![0u8; phsize];
    f.read_exact_at(&mut ph, h.e_phoff).ok()?;
    let phdrs = goblin::elf::ProgramHeader::parse(&ph, 0, usize::from(h.e_phnum), ctx).ok()?;
    let little = h.e_ident[5] != 2;
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        let a: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    };
    for p in phdrs
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_NOTE)
    {
        let len = usize::try_from(p.p_filesz).ok()?.min(1 << 16);
        let mut notes = vec![0u8; len];
        f.read_exact_at(&mut notes, p.p_offset).ok()?;
        let mut i = 0usize;
        while i + 12 <= notes.len() {
            let namesz = u32_at(&notes, i)? as usize;
            let descsz = u32_at(&notes, i + 4)? as usize;
            let kind = u32_at(&notes, i + 8)?;
            let name_at = i + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let next = desc_at + descsz.div_ceil(4) * 4;
            if next > notes.len() {
                break;
            }
            if kind == 3 && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
                return Some(hex::encode(&notes[desc_at..desc_at + descsz]));
            }
            i = next;
        }
    }
    None
}

/// The distinct files among `maps`, identified.
pub fn identify(
    proc_root: &Path,
    pid: u32,
    maps: &[Mapping],
    cache: &mut FileCache,
) -> Vec<MappedFile> {
    let mut seen: HashSet<(&str, u64)> = HashSet::new();
    let mut out: Vec<MappedFile> = Vec::new();
    for m in maps.iter().filter(|m| m.is_file()) {
        if !seen.insert((m.dev.as_str(), m.inode)) {
            continue;
        }
        let deleted = m.path.ends_with(" (deleted)");
        let via = proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{:x}-{:x}", m.start, m.end));
        let opened = File::open(&via).or_else(|_| File::open(&m.path));
        let mut entry = MappedFile {
            path: m.path.clone(),
            deleted,
            device: m.dev.clone(),
            inode: m.inode,
            size: None,
            build_id: None,
            sha256: None,
            mapped_at: format!("{:#x}", m.start),
            error: None,
        };
        match opened.and_then(|f| f.metadata().map(|md| (f, md))) {
            Ok((f, md)) => {
                entry.size = Some(md.size());
                let key = (md.dev(), md.ino(), md.mtime(), md.mtime_nsec());
                let (b, s) = match cache.by_key.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let b = build_id(&f);
                        let s = match cairn_protocol::sha256_reader(&f) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                entry.error = Some(format!("cannot hash: {e}"));
                                None
                            }
                        };
                        if s.is_some() {
                            cache.by_key.insert(key, (b.clone(), s.clone()));
                        }
                        (b, s)
                    }
                };
                entry.build_id = b;
                entry.sha256 = s;
            }
            Err(e) => entry.error = Some(format!("cannot open: {e}")),
        }
        out.push(entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_build_id_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let f = File::open(&exe).unwrap();
        // Rust test binaries are linked with a GNU build-id by default on Linux.
        let id = build_id(&f).expect("build id");
        assert!(
            id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&id), "readelf -n does not show {id}");
        }
    }

    #[test]
    fn a_non_elf_file_has_no_build_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(
            &p,
            b"not an elf file at all, just text........................................",
        )
        .unwrap();
        assert_eq!(build_id(&File::open(&p).unwrap()), None);
    }
}
