//! `mounts.json`: the mount table of the host's mount namespace (`/proc/1/mountinfo`).
//!
//! Attackers hide processes by mounting over `/proc/PID`, and containers escape through
//! host paths mounted inside them; the full mountinfo (ids, parents, propagation) shows both.

use serde_json::{Map, Value};

use super::{artifact, put, Errors, VolatileOptions};
use crate::capture::Artifact;
use crate::mountinfo::{self, Mount};
use cairn_protocol::rfc3339;

pub(super) fn collect(opts: &VolatileOptions) -> Artifact {
    let collected_at = rfc3339::now();
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
                    let m = mountinfo::parse_line(l);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn host_mount_table_has_root_and_proc() {
        let a = collect(&VolatileOptions::default());
        let doc: Value = serde_json::from_slice(&a.bytes).unwrap();
        let mounts = doc["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["mount_point"] == "/"));
        assert!(mounts.iter().any(|m| m["fs_type"] == "proc"));
    }
}
