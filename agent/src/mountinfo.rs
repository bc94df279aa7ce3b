//! `/proc/PID/mountinfo`, parsed in one place: the volatile `mounts.json`, the sensor (is
//! tracefs mounted, where is the cgroup2 hierarchy) and the host identity (a Docker
//! container's id from its bind mounts) all read the same [`Mount`] records.
//!
//! A line is `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
//! (proc(5)): ids, `major:minor`, root, mount point, mount options, optional fields up to the
//! ` - ` separator, then file system type, source and super options. The kernel escapes space,
//! tab, newline and backslash in paths as octal (`\040`); they are decoded here.

use serde::Serialize;
use std::path::Path;

/// One mount, as the kernel lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mount {
    pub mount_id: u64,
    pub parent_id: u64,
    /// `major:minor` of the device.
    pub device: String,
    /// Root of the mount within its file system.
    pub root: String,
    pub mount_point: String,
    pub mount_options: String,
    /// Propagation and other optional fields (`shared:1`, `master:2`).
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// One line of mountinfo, or `None` when it is not one.
pub fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let f: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.splitn(3, ' ').collect();
    Some(Mount {
        mount_id: f.first()?.parse().ok()?,
        parent_id: f.get(1)?.parse().ok()?,
        device: f.get(2)?.to_string(),
        root: unescape(f.get(3)?),
        mount_point: unescape(f.get(4)?),
        mount_options: f.get(5)?.to_string(),
        optional_fields: f
            .get(6..)
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        fs_type: unescape(r.first()?),
        source: unescape(r.get(1)?),
        super_options: r.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// Every mount of a mountinfo text; lines that are not mounts are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Mount> + '_ {
    text.lines().filter_map(parse_line)
}

/// The mounts listed in a mountinfo file (`/proc/self/mountinfo`).
pub fn read(path: &Path) -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string(path)?).collect())
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
/// a hybrid host), by a mountinfo file (`/proc/self/mountinfo`).
pub fn cgroup2_root(mountinfo: &Path) -> Option<std::path::PathBuf> {
    read(mountinfo).ok().and_then(|ms| {
        ms.into_iter()
            .find(|m| m.fs_type == "cgroup2")
            .map(|m| std::path::PathBuf::from(m.mount_point))
    })
}

/// The `upperdir` of the overlay mounted at `/` (the last mount there: mounts stack), as a
/// container runtime mounts a container's root. Overlay escapes a comma in a path as `\,`.
pub fn root_overlay_upperdir(mounts: &[Mount]) -> Option<std::path::PathBuf> {
    let m = mounts.iter().rev().find(|m| m.mount_point == "/")?;
    if m.fs_type != "overlay" {
        return None;
    }
    let opts = unescape(&m.super_options);
    let mut cur = String::new();
    let mut chars = opts.chars();
    let mut fields = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ',' => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
        .into_iter()
        .find_map(|f| f.strip_prefix("upperdir=").map(std::path::PathBuf::from))
        .filter(|p| p.is_absolute())
}

/// Undo the kernel's octal escapes of space, tab, newline and backslash (`\040`).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_writable_layer_of_an_overlay_root() {
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
            900 1 0:77 / / rw,relatime - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/var/lib/docker/overlay2/ab\\,c/diff,workdir=/w\n\
            901 900 0:5 / /proc rw - proc proc rw\n";
        let ms: Vec<Mount> = parse(text).collect();
        assert_eq!(
            root_overlay_upperdir(&ms),
            Some("/var/lib/docker/overlay2/ab,c/diff".into())
        );
        // The host's own root: no writable layer.
        assert_eq!(root_overlay_upperdir(&ms[..1]), None);
        let ro = parse("2 0 0:7 / / ro - overlay overlay ro,lowerdir=/a:/b\n").collect::<Vec<_>>();
        assert_eq!(root_overlay_upperdir(&ro), None);
    }

    #[test]
    fn parses_a_line_with_escapes_and_optional_fields() {
        let m = parse_line(
            "36 35 98:0 /my\\040dir /mnt/with\\040space\\011tab rw,noatime shared:1 master:2 - ext4 /dev/sda\\0401 rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!(m.device, "98:0");
        assert_eq!(m.root, "/my dir");
        assert_eq!(m.mount_point, "/mnt/with space\ttab");
        assert_eq!(m.mount_options, "rw,noatime");
        assert_eq!(m.optional_fields, ["shared:1", "master:2"]);
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(m.source, "/dev/sda 1");
        assert_eq!(m.super_options, "rw,errors=continue");
    }

    #[test]
    fn escapes_and_bad_lines() {
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
        // Not an octal escape, or one past a byte: kept as written.
        assert_eq!(unescape("\\9x\\777"), "\\9x\\777");
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("x 35 98:0 / / rw - ext4 /dev/sda rw").is_none());
        // No optional fields, no super options.
        let m = parse_line("22 1 0:21 / /sys/kernel/tracing rw - tracefs tracefs").unwrap();
        assert!(m.optional_fields.is_empty());
        assert_eq!(
            (
                m.fs_type.as_str(),
                m.source.as_str(),
                m.super_options.as_str()
            ),
            ("tracefs", "tracefs", "")
        );
        let text = "garbage\n22 1 0:21 / /sys/kernel/tracing rw - tracefs tracefs rw\n";
        assert_eq!(parse(text).count(), 1);
    }

    #[test]
    fn this_process_has_a_root_mount() {
        let mounts = read(Path::new("/proc/self/mountinfo")).unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == "/"));
    }
}
