//! Physical memory: every byte of System RAM, as a LiME image (the default), raw, or padded.
//!
//! Sources are tried in this order, and why each failed is kept in the manifest:
//! 1. `/proc/kcore`: an ELF whose PT_LOAD segments carry the physical address of the memory
//!    they map (`p_paddr`; -1 for vmalloc and module areas, which are skipped);
//! 2. `/dev/crash` (RHEL's driver), read at physical offsets;
//! 3. `/dev/mem`, read at physical offsets (STRICT_DEVMEM refuses RAM above 1 MiB).
//!
//! RAM that the source does not map (the partial last page of an iomem range, which kcore
//! leaves out) or refuses to give is written as zeros and recorded as a gap; nothing is
//! zero-filled silently. The LiME header of each range is computed before reading, so the
//! image streams front to back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::iomem::{self, RamRange};
use super::stream::{MemorySource, Piece, PieceReader, SharedReport};

const LIME_MAGIC: u32 = 0x4C69_4D45;
const LIME_VERSION: u32 = 1;
/// Kernel text and module mappings in kcore also carry physical addresses, duplicating RAM
/// that the direct map covers; the direct map is preferred.
const KERNEL_TEXT_BASE: u64 = 0xffff_ffff_8000_0000;
/// STRICT_DEVMEM still lets /dev/mem read the first megabyte (BIOS and legacy areas), which
/// is where kcore leaves out the partial last page of the first RAM range.
const DEVMEM_OPEN_LIMIT: u64 = 1 << 20;
/// Marks a piece's `at` as a /dev/mem offset rather than a /proc/kcore one (kcore offsets
/// never reach 2^63).
const VIA_DEVMEM: u64 = 1 << 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// LiME v1: a 32-byte header before each range.
    #[default]
    Lime,
    /// The ranges' bytes one after another; the manifest says where each starts.
    Raw,
    /// Zeros from address 0, each range at its own physical offset.
    Padded,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lime" => Ok(Format::Lime),
            "raw" => Ok(Format::Raw),
            "padded" => Ok(Format::Padded),
            other => Err(format!(
                "unknown memory format {other:?}: lime, raw or padded"
            )),
        }
    }
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Lime => "lime",
            Format::Raw => "raw",
            Format::Padded => "padded",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PhysicalError {
    #[error("cannot read /proc/iomem: {0}")]
    Iomem(std::io::Error),
    #[error(transparent)]
    Ram(#[from] iomem::IomemError),
    #[error(
        "no physical memory source can be read ({tried}); kernel lockdown: {lockdown}. {advice}"
    )]
    NoSource {
        tried: String,
        lockdown: String,
        advice: &'static str,
    },
}

/// The 32-byte LiME range header.
pub fn lime_header(r: &RamRange) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&LIME_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&LIME_VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&r.start.to_le_bytes());
    h[16..24].copy_from_slice(&r.end.to_le_bytes());
    h
}

/// A segment of /proc/kcore that maps physical memory.
#[derive(Debug, Clone, Copy)]
struct KcoreSegment {
    paddr: u64,
    len: u64,
    offset: u64,
    vaddr: u64,
}

/// How physical addresses are reached in an opened source.
enum Access {
    Kcore(Vec<KcoreSegment>),
    /// Physical address = file offset.
    Direct,
}

pub struct PhysicalSource {
    file: File,
    /// /dev/mem, for what kcore leaves out of the first megabyte.
    devmem: Option<File>,
}

impl MemorySource for PhysicalSource {
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match (&self.devmem, at & VIA_DEVMEM != 0) {
            (Some(d), true) => d.read_at(buf, at & !VIA_DEVMEM),
            _ => self.file.read_at(buf, at),
        }
    }
    fn gone(&self) -> Option<String> {
        None
    }
}

fn kcore_segments(f: &File) -> Result<Vec<KcoreSegment>, String> {
    let mut head = [0u8; 64];
    f.read_exact_at(&mut head, 0)
        .map_err(|e| format!("cannot read the ELF header: {e}"))?;
    let h = goblin::elf::Elf::parse_header(&head).map_err(|e| format!("not an ELF file: {e}"))?;
    let ctx = goblin::container::Ctx::new(
        goblin::container::Container::Big,
        goblin::container::Endian::Little,
    );
    let size = usize::from(h.e_phentsize) * usize::from(h.e_phnum);
    let mut ph = vec![0u8; size];
    f.read_exact_at(&mut ph, h.e_phoff)
        .map_err(|e| format!("cannot read the program headers: {e}"))?;
    let phdrs = goblin::elf::ProgramHeader::parse(&ph, 0, usize::from(h.e_phnum), ctx)
        .map_err(|e| format!("bad program headers: {e}"))?;
    let mut segs: Vec<KcoreSegment> = phdrs
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD && p.p_paddr != u64::MAX)
        .map(|p| KcoreSegment {
            paddr: p.p_paddr,
            len: p.p_memsz,
            offset: p.p_offset,
            vaddr: p.p_vaddr,
        })
        .collect();
    // Direct-map segments first, so they win where kernel text duplicates them.
    segs.sort_by_key(|s| (s.vaddr >= KERNEL_TEXT_BASE, s.paddr));
    if segs.is_empty() {
        return Err("no segment carries a physical address (kernel older than 4.8?)".into());
    }
    Ok(segs)
}

/// Splits a RAM range into pieces: source reads where the access maps it, gaps elsewhere.
fn range_pieces(access: &Access, r: &RamRange, slot: usize, out: &mut Vec<Piece>) {
    let end = r.end + 1;
    match access {
        Access::Direct => out.push(Piece::Source {
            at: r.start,
            addr: r.start,
            len: r.len(),
            hash_slot: Some(slot),
        }),
        Access::Kcore(segs) => {
            let mut at = r.start;
            while at < end {
                let covering = segs
                    .iter()
                    .find(|s| s.paddr <= at && at < s.paddr.saturating_add(s.len));
                match covering {
                    Some(s) => {
                        let stop = end.min(s.paddr + s.len);
                        out.push(Piece::Source {
                            at: s.offset + (at - s.paddr),
                            addr: at,
                            len: stop - at,
                            hash_slot: Some(slot),
                        });
                        at = stop;
                    }
                    None => {
                        // Up to where the next segment starts, or the range's end.
                        let stop = segs
                            .iter()
                            .filter(|s| s.paddr > at)
                            .map(|s| s.paddr)
                            .min()
                            .unwrap_or(end)
                            .min(end);
                        out.push(Piece::Missing {
                            addr: at,
                            hash_slot: Some(slot),
                            len: stop - at,
                            reason: format!(
                                "{at:#x}-{:#x}: /proc/kcore does not map this RAM (a partial page at the end of an iomem range, or memory the kernel keeps out of its direct map)",
                                stop - 1
                            ),
                        });
                        at = stop;
                    }
                }
            }
        }
    }
}

/// Reads what kcore does not map below 1 MiB from /dev/mem instead, when /dev/mem gives it.
fn low_memory_from_devmem(pieces: &mut [Piece], devmem: &Path) -> Option<File> {
    let low: Vec<usize> = pieces
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Piece::Missing { addr, len, .. } if addr + len <= DEVMEM_OPEN_LIMIT => Some(i),
            _ => None,
        })
        .collect();
    if low.is_empty() {
        return None;
    }
    let f = File::open(devmem).ok()?;
    let mut used = false;
    for i in low {
        let (addr, len, slot) = match &pieces[i] {
            Piece::Missing {
                addr,
                len,
                hash_slot,
                ..
            } => (*addr, *len, *hash_slot),
            _ => continue,
        };
        let mut probe = vec![0u8; len.min(4096) as usize];
        if f.read_exact_at(&mut probe, addr).is_ok() {
            pieces[i] = Piece::Source {
                at: addr | VIA_DEVMEM,
                addr,
                len,
                hash_slot: slot,
            };
            used = true;
        }
    }
    used.then_some(f)
}

/// A physical memory image decided on.
pub struct PlannedImage {
    pub source: String,
    pub details: Map<String, Value>,
    pub reader: PieceReader<PhysicalSource>,
    pub report: SharedReport,
    pub len: u64,
}

fn lockdown() -> String {
    std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        })
        .unwrap_or_else(|| "not reported (no lockdown LSM)".into())
}

/// Opens the first source that gives the first page of RAM.
fn open_source(
    ram: &[RamRange],
    candidates: &[PathBuf],
) -> Result<(String, File, Access, Vec<Value>), Vec<Value>> {
    let mut tried = Vec::new();
    let probe = ram.first().map(|r| r.start).unwrap_or(0);
    for path in candidates {
        let name = path.display().to_string();
        let attempt = (|| -> Result<(File, Access), String> {
            let f = File::open(path).map_err(|e| e.to_string())?;
            let access = if name.ends_with("kcore") {
                Access::Kcore(kcore_segments(&f)?)
            } else {
                Access::Direct
            };
            let mut pieces = Vec::new();
            let r = RamRange {
                start: probe,
                end: probe + 4095,
            };
            range_pieces(&access, &r, 0, &mut pieces);
            let at = pieces
                .iter()
                .find_map(|p| match p {
                    Piece::Source { at, .. } => Some(*at),
                    _ => None,
                })
                .ok_or("it does not map the first RAM page")?;
            let mut page = vec![0u8; 4096];
            f.read_at(&mut page, at)
                .map_err(|e| format!("reading RAM at {probe:#x}: {e}"))?;
            Ok((f, access))
        })();
        match attempt {
            Ok((f, access)) => {
                tried.push(json!({"source": name, "result": "used"}));
                return Ok((name, f, access, tried));
            }
            Err(e) => tried.push(json!({"source": name, "result": e})),
        }
    }
    Err(tried)
}

/// Plans an image of all System RAM in `format`, from the first source that works.
pub fn plan(
    format: Format,
    proc_root: &Path,
    dev_root: &Path,
) -> Result<PlannedImage, PhysicalError> {
    let text = std::fs::read_to_string(proc_root.join("iomem")).map_err(PhysicalError::Iomem)?;
    let ram = iomem::system_ram(&text)?;
    let candidates = [
        proc_root.join("kcore"),
        dev_root.join("crash"),
        dev_root.join("mem"),
    ];
    let (source, file, access, tried) = match open_source(&ram, &candidates) {
        Ok(v) => v,
        Err(tried) => {
            let tried = tried
                .iter()
                .map(|t| {
                    format!(
                        "{}: {}",
                        t["source"].as_str().unwrap_or("?"),
                        t["result"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PhysicalError::NoSource {
                tried,
                lockdown: lockdown(),
                advice: "Run as root (CAP_SYS_RAWIO); on a kernel built without /proc/kcore or \
                         with lockdown=confidentiality, boot with lockdown disabled or load a \
                         signed LiME module, or capture the instance's volume and memory from \
                         the hypervisor side",
            });
        }
    };
    let mut pieces = Vec::new();
    let mut ranges = Vec::new();
    let mut cursor = 0u64; // padded: next physical address written
    for (slot, r) in ram.iter().enumerate() {
        match format {
            Format::Lime => pieces.push(Piece::Bytes(lime_header(r).to_vec())),
            Format::Padded if r.start > cursor => pieces.push(Piece::Zeros(r.start - cursor)),
            _ => {}
        }
        let before = PieceReader::<PhysicalSource>::len(&pieces);
        range_pieces(&access, r, slot, &mut pieces);
        ranges.push(json!({
            "start": format!("{:#x}", r.start),
            "end": format!("{:#x}", r.end),
            "length": r.len(),
            "offset": before,
        }));
        cursor = r.end + 1;
    }
    let devmem = match access {
        Access::Kcore(_) => low_memory_from_devmem(&mut pieces, &dev_root.join("mem")),
        Access::Direct => None,
    };
    let len = PieceReader::<PhysicalSource>::len(&pieces);
    let banner = std::fs::read_to_string(proc_root.join("version"))
        .map(|s| s.trim_end().to_string())
        .ok();
    let mut details = Map::new();
    details.insert("format".into(), format.as_str().into());
    details.insert("banner".into(), banner.into());
    details.insert(
        "ram_bytes".into(),
        ram.iter().map(RamRange::len).sum::<u64>().into(),
    );
    details.insert("ranges".into(), ranges.into());
    details.insert("sources_tried".into(), tried.into());
    details.insert("lockdown".into(), lockdown().into());
    let (reader, report) = PieceReader::new(PhysicalSource { file, devmem }, pieces);
    Ok(PlannedImage {
        source,
        details,
        reader,
        report,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lime_header_is_byte_exact() {
        let h = lime_header(&RamRange {
            start: 0x1000,
            end: 0x9fbff,
        });
        assert_eq!(&h[0..4], &[0x45, 0x4d, 0x69, 0x4c]); // "EMiL" on disk: 0x4C694D45 LE
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 0x1000);
        assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()), 0x9fbff);
        assert_eq!(&h[24..32], &[0u8; 8]);
    }

    #[test]
    fn kcore_translation_records_what_it_does_not_map() {
        let access = Access::Kcore(vec![
            KcoreSegment {
                paddr: 0x1000,
                len: 0x9e000,
                offset: 0x10_0000,
                vaddr: 0xffff_8880_0000_1000,
            },
            KcoreSegment {
                paddr: 0x1000,
                len: 0x1000,
                offset: 0x90_0000,
                vaddr: KERNEL_TEXT_BASE,
            },
        ]);
        if let Access::Kcore(s) = &access {
            assert!(s[0].vaddr < KERNEL_TEXT_BASE);
        }
        let mut p = Vec::new();
        range_pieces(
            &access,
            &RamRange {
                start: 0x1000,
                end: 0x9fbff,
            },
            0,
            &mut p,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        match &p[0] {
            Piece::Source { at, addr, len, .. } => {
                assert_eq!((*at, *addr, *len), (0x10_0000, 0x1000, 0x9e000));
            }
            other => panic!("{other:?}"),
        }
        match &p[1] {
            Piece::Missing { len, reason, .. } => {
                assert_eq!(*len, 0xc00);
                assert!(reason.starts_with("0x9f000-0x9fbff"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
