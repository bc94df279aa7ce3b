//! Block-device images: the raw device as one item, and what the host knows about it.
//!
//! The device is read front to back through the evidence pipeline; all-zero 4 MiB chunks are
//! stored as the `zero` codec (nothing at all) while still hashed as their bytes, so the item's
//! SHA-256 is `sha256sum DEV` and an empty disk costs almost nothing. Metadata comes from the
//! block ioctls and sysfs (size, sector sizes, model, serial, vendor, partitions), and the
//! partition table is read from the device itself (MBR and GPT), since a loop device or a
//! disk without partition scanning has no partitions in sysfs.

use crate::capture::file::OpenedFile;
use serde_json::{json, Map, Value};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `_IOR(0x12, 114, u64)`: the device size in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// Open a block device for imaging, with its details. Only a block device under `/dev` is
/// imaged: the path (symlinks such as `/dev/disk/by-id/…` resolved) must lead there, it is
/// opened read-only without following a symlink, and the opened file must be a block device
/// (`fstat`), so a request naming `/etc/passwd` or a link planted elsewhere gets an error, not
/// an image.
pub fn open(device: &str) -> Result<(OpenedFile, Map<String, Value>), String> {
    let asked = Path::new(device);
    if !asked.is_absolute() {
        return Err(format!(
            "{device:?}: a relative path; name the block device by its absolute path under /dev (/dev/nvme1n1)"
        ));
    }
    let real = std::fs::canonicalize(asked).map_err(|e| format!("{device}: cannot open: {e}"))?;
    if !real.starts_with("/dev") {
        return Err(format!(
            "{device}: not a block device under /dev (it is {}); the disk profile images block devices such as /dev/nvme0n1 or /dev/loop0",
            real.display()
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| format!("{device}: cannot open: {e} (imaging a device needs root)"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{device}: cannot stat: {e}"))?;
    let ft = meta.file_type();
    if !ft.is_block_device() {
        let what = if ft.is_file() {
            "a regular file"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a block device"
        };
        return Err(format!(
            "{device}: is {what}, not a block device; the disk profile images block devices such as /dev/nvme0n1 or /dev/loop0"
        ));
    }
    let mut d = Map::new();
    d.insert("type".into(), "block_device".into());
    if real != asked {
        d.insert("resolved".into(), real.display().to_string().into());
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    d.insert("major".into(), major.into());
    d.insert("minor".into(), minor.into());
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    sysfs_details(&sys, &mut d);
    let size = block_size(&file)
        .or_else(|| sysfs_u64(&sys.join("size")).map(|s| s * 512))
        .ok_or_else(|| format!("{device}: cannot read its size"))?;
    d.insert("size".into(), size.into());
    let sector = d
        .get("logical_sector_size")
        .and_then(Value::as_u64)
        .unwrap_or(512);
    d.insert(
        "partition_table".into(),
        partition_table(&file, sector, size),
    );
    let opened = OpenedFile::from_file(file, device.to_string(), None)?;
    Ok((opened, d))
}

fn block_size(f: &std::fs::File) -> Option<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to our local.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(f),
            BLKGETSIZE64 as _,
            &mut size as *mut u64,
        )
    };
    (rc == 0).then_some(size)
}

fn sysfs_str(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn sysfs_u64(p: &Path) -> Option<u64> {
    sysfs_str(p)?.parse().ok()
}

/// Sector sizes, identity strings and kernel-known partitions from `/sys/dev/block/MAJ:MIN`.
fn sysfs_details(sys: &Path, d: &mut Map<String, Value>) {
    if let Ok(real) = std::fs::canonicalize(sys) {
        d.insert("sysfs".into(), real.display().to_string().into());
    }
    for (key, file) in [
        ("logical_sector_size", "queue/logical_block_size"),
        ("physical_sector_size", "queue/physical_block_size"),
        ("read_only", "ro"),
        ("removable", "removable"),
        ("rotational", "queue/rotational"),
    ] {
        if let Some(v) = sysfs_u64(&sys.join(file)) {
            d.insert(key.into(), v.into());
        }
    }
    for (key, files) in [
        ("model", &["device/model", "model"][..]),
        ("vendor", &["device/vendor"][..]),
        (
            "serial",
            &["device/serial", "serial", "device/wwid", "wwid"][..],
        ),
        ("loop_backing_file", &["loop/backing_file"][..]),
    ] {
        if let Some(v) = files.iter().find_map(|f| sysfs_str(&sys.join(f))) {
            d.insert(key.into(), v.into());
        }
    }
    let mut parts = Vec::new();
    if let Ok(entries) = std::fs::read_dir(sys) {
        for e in entries.flatten() {
            let p = e.path();
            let Some(number) = sysfs_u64(&p.join("partition")) else {
                continue;
            };
            parts.push(json!({
                "name": e.file_name().to_string_lossy(),
                "number": number,
                "start_sector_512": sysfs_u64(&p.join("start")),
                "sectors_512": sysfs_u64(&p.join("size")),
            }));
        }
    }
    parts.sort_by_key(|p| p["number"].as_u64());
    d.insert("sysfs_partitions".into(), parts.into());
}

/// The partition table as read from the device: `{"scheme": "gpt"|"mbr"|"none", ...}`.
fn partition_table(f: &std::fs::File, sector: u64, size: u64) -> Value {
    let sector = sector.clamp(512, 4096);
    let mut lba0 = vec![0u8; sector as usize];
    if size < 2 * sector || f.read_exact_at(&mut lba0, 0).is_err() {
        return json!({"scheme": "none", "note": "device too small or unreadable"});
    }
    if lba0[510..512] != [0x55, 0xAA] {
        return json!({"scheme": "none"});
    }
    let mbr = parse_mbr(&lba0);
    let protective = mbr.iter().any(|p| p["type"] == "0xee");
    if protective {
        let mut lba1 = vec![0u8; sector as usize];
        if f.read_exact_at(&mut lba1, sector).is_ok() {
            if let Some(gpt) = parse_gpt(f, &lba1, sector) {
                return gpt;
            }
        }
    }
    json!({"scheme": "mbr", "partitions": mbr})
}

fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .map(|s| u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
        .unwrap_or(0)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn parse_mbr(lba0: &[u8]) -> Vec<Value> {
    (0..4)
        .filter_map(|i| {
            let e = &lba0[446 + 16 * i..446 + 16 * (i + 1)];
            let kind = e[4];
            (kind != 0).then(|| {
                json!({
                    "number": i + 1,
                    "bootable": e[0] == 0x80,
                    "type": format!("0x{kind:02x}"),
                    "start_lba": le32(e, 8),
                    "sectors": le32(e, 12),
                })
            })
        })
        .collect()
}

fn guid(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        hex::encode(&b[10..16])
    )
}

fn parse_gpt(f: &std::fs::File, hdr: &[u8], sector: u64) -> Option<Value> {
    if hdr.get(0..8)? != b"EFI PART" {
        return None;
    }
    let entries_lba = le64(hdr, 72);
    let count = le32(hdr, 80).min(256);
    let entry_size = le32(hdr, 84);
    if !(128..=4096).contains(&entry_size) {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(count * entry_size).ok()?];
    f.read_exact_at(&mut table, entries_lba.checked_mul(sector)?)
        .ok()?;
    let mut parts = Vec::new();
    for (i, e) in table.chunks_exact(entry_size as usize).enumerate() {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        parts.push(json!({
            "number": i + 1,
            "type_guid": guid(&e[0..16]),
            "unique_guid": guid(&e[16..32]),
            "first_lba": le64(e, 32),
            "last_lba": le64(e, 40),
            "name": String::from_utf16_lossy(&name),
        }));
    }
    Some(json!({"scheme": "gpt", "disk_guid": guid(&hdr[56..72]), "partitions": parts}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbr_partition_table_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.img");
        let mut img = vec![0u8; 1 << 20];
        img[510] = 0x55;
        img[511] = 0xAA;
        // Partition 1: Linux (0x83), from LBA 2048, 100 sectors.
        img[446 + 4] = 0x83;
        img[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&100u32.to_le_bytes());
        std::fs::write(&p, &img).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let t = partition_table(&f, 512, 1 << 20);
        assert_eq!(t["scheme"], "mbr");
        assert_eq!(t["partitions"][0]["type"], "0x83");
        assert_eq!(t["partitions"][0]["start_lba"], 2048);
    }

    #[test]
    fn only_block_devices_under_dev_are_imaged() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let link = d.path().join("looks-like-a-disk");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        for (dev, want) in [
            ("/etc/passwd", "not a block device under /dev"),
            (img.to_str().unwrap(), "not a block device under /dev"),
            (link.to_str().unwrap(), "it is /etc/passwd"),
            (d.path().to_str().unwrap(), "not a block device under /dev"),
            ("/dev/null", "is a character device, not a block device"),
            ("/dev", "is a directory, not a block device"),
            ("dev/sda", "relative path"),
            ("../../dev/sda", "relative path"),
            ("/nonexistent/dev", "/nonexistent/dev: cannot open"),
        ] {
            let e = open(dev).unwrap_err();
            assert!(e.contains(want), "{dev}: {e}");
        }
    }
}
