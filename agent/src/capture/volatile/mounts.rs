//! `mounts.json`: the mount table of the host's mount namespace (`/proc/1/mountinfo`).
//!
//! Attackers hide processes by mounting over `/proc/PID`, and containers escape through
//! host paths mounted inside them; the full mountinfo (ids, parents, propagation) shows both.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{artifact, now_rfc3339, put, Errors, VolatileOptions};
use crate::capture::Artifact;

#[derive(Debug, Serialize, PartialEq)]
struct Mount {
    mount_id: u64,
    parent_id: u64,
    /// `major:minor` of the device.
    device: String,
    /// Root of the mount within its file system.
    root: String,
    mount_point: String,
    mount_options: String,
    /// Propagation and other optional fields (`shared:1`, `master:2`).
    optional_fields: Vec<String>,
    fs_type: String,
    source: String,
    super_options: String,
}

pub(super) fn collect(opts: &VolatileOptions) -> Artifact {
    let collected_at = now_rfc3339();
    let mut errors = Errors::default();
    let mut body = Map::new();
    // pid 1's table is the host's even when the agent runs in its own mount namespace.
    let mut source = opts.proc_root.join("1/mountinfo");
    let text = match std::fs::read_to_string(&source) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(source.display().to_string(), e);
            source = opts.proc_root.join("self/mountinfo");
            std::fs::read_to_string(&source)
                .map_err(|e| errors.push(source.display().to_string(), e))
                .ok()
        }
    };
    body.insert("source".into(), Value::String(source.display().to_string()));
    let mounts: Vec<Mount> = text
        .as_deref()
        .map(|t| {
            t.lines()
                .filter_map(|l| {
                    let m = parse_mountinfo_line(l);
                    if m.is_none() {
                        errors.push("mountinfo line", format!("unparsable: {l:?}"));
                    }
                    m
                })
                .collect()
        })
        .unwrap_or_default();
    put(&mut body, &mut errors, "mounts", mounts);
    artifact("mounts.json", collected_at, body, errors, true)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
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

/// Undo the kernel's octal escapes of space, tab, newline and backslash (`\040`).
pub(super) fn unescape(s: &str) -> String {
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
    fn parses_mountinfo_with_escapes() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /my\\040dir /mnt/with\\040space\\011tab rw,noatime shared:1 master:2 - ext4 /dev/sda\\0401 rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.mount_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!(m.device, "98:0");
        assert_eq!(m.root, "/my dir");
        assert_eq!(m.mount_point, "/mnt/with space\ttab");
        assert_eq!(m.optional_fields, ["shared:1", "master:2"]);
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(m.source, "/dev/sda 1");
        assert_eq!(m.super_options, "rw,errors=continue");
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
        assert!(parse_mountinfo_line("garbage").is_none());
    }

    #[test]
    fn host_mount_table_has_root_and_proc() {
        let a = collect(&VolatileOptions::default());
        let doc: Value = serde_json::from_slice(&a.bytes).unwrap();
        let mounts = doc["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mount_point"] == "/"));
        assert!(mounts.iter().any(|m| m["fs_type"] == "proc"));
    }
}
