//! `host.json`: who the host is and what its clocks said when the collection ran, so that
//! every other time in the collection can be placed and cross-checked.

use serde_json::{Map, Value};

use super::{artifact, put, read_trimmed, under, Errors, VolatileOptions};
use crate::capture::Artifact;
use crate::identity;
use cairn_protocol::rfc3339;

pub(super) fn collect(opts: &VolatileOptions) -> Artifact {
    let collected_at = rfc3339::now();
    let mut errors = Errors::default();
    let mut body = Map::new();

    let (id, cloud_err) = identity::host_identity_at(
        &opts.metadata,
        &opts.proc_root,
        &opts.sys_root,
        &opts.host_root,
    );
    put(&mut body, &mut errors, "identity", &id);
    if let Some(e) = cloud_err {
        errors.push("cloud metadata", e);
    }

    for (key, file) in [("uptime", "uptime"), ("loadavg", "loadavg")] {
        let v = match read_trimmed(&opts.proc_root.join(file)) {
            Ok(s) => Value::String(s),
            Err(e) => {
                errors.push(format!("{}", opts.proc_root.join(file).display()), e);
                Value::Null
            }
        };
        body.insert(key.into(), v);
    }
    let btime = super::processes::boot_time(&opts.proc_root);
    match btime {
        Ok(b) => {
            body.insert("boot_time_unix".into(), Value::from(b));
            let t = rfc3339::from_unix_ns(i128::from(b) * 1_000_000_000);
            body.insert(
                "boot_time".into(),
                t.map(Value::String).unwrap_or(Value::Null),
            );
        }
        Err(e) => errors.push("boot time (/proc/stat btime)", e),
    }
    body.insert("timezone".into(), timezone(opts, &mut errors));
    artifact("host.json", collected_at, body, errors, true)
}

/// The configured time zone: `/etc/timezone` (Debian) or the `/etc/localtime` link target.
fn timezone(opts: &VolatileOptions, errors: &mut Errors) -> Value {
    let mut tz = Map::new();
    if let Ok(s) = read_trimmed(&under(&opts.host_root, "/etc/timezone")) {
        tz.insert("etc_timezone".into(), Value::String(s));
    }
    let localtime = under(&opts.host_root, "/etc/localtime");
    match std::fs::read_link(&localtime) {
        Ok(t) => {
            let t = t.to_string_lossy().into_owned();
            if let Some(name) = t.split("zoneinfo/").nth(1) {
                tz.insert("name".into(), Value::String(name.to_string()));
            }
            tz.insert("localtime_link".into(), Value::String(t));
        }
        // A regular file (copied zone) is not a link; absent means UTC.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tz.insert("localtime_link".into(), Value::Null);
        }
        Err(e) if super::is_gone(&e) => {}
        Err(e) => errors.push(localtime.display().to_string(), e),
    }
    if !tz.contains_key("name") {
        if let Some(Value::String(s)) = tz.get("etc_timezone").cloned() {
            tz.insert("name".into(), Value::String(s));
        }
    }
    Value::Object(tz)
}
