//! What the CLI prints for people: values made safe for a terminal, sizes, times to the
//! second, columns that stay aligned, collections and their items.

use serde_json::Value;

/// A value as text for a terminal: control characters (a reason, a file name or an argv can
/// carry escape sequences that rewrite what a responder sees) are shown escaped.
pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    }
}

/// Text with every control character escaped (`\u{1b}`), so output cannot move the cursor,
/// recolour or erase what is already on the screen.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut f = n as f64;
    let mut i = 0;
    while f >= 1024.0 && i < U.len() - 1 {
        f /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{f:.1} {}", U[i])
    }
}

/// An RFC 3339 time to the second, in UTC (`2024-05-01T12:00:00Z`): tables need no
/// nanoseconds; `--json` keeps them.
pub(crate) fn time_s(v: &Value) -> String {
    let Some(text) = v.as_str() else {
        return s(v);
    };
    cairn_protocol::rfc3339::parse_ns(text)
        .and_then(|ns| cairn_protocol::rfc3339::from_unix(ns.div_euclid(1_000_000_000)))
        .unwrap_or_else(|| printable(text))
}

/// At most `n` characters, the middle cut out (`/var/log/…/auth.log`): both ends of a path
/// say most about it.
pub(crate) fn mid(text: &str, n: usize) -> String {
    let count = text.chars().count();
    if count <= n || n < 3 {
        return text.to_string();
    }
    let tail = (n - 1) / 2;
    let head = n - 1 - tail;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

/// At most `n` characters on one line, the end cut off.
pub(crate) fn clip(text: &str, n: usize) -> String {
    let one_line = text.replace('\n', "⏎");
    if one_line.chars().count() <= n || n == 0 {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n - 1).collect::<String>())
    }
}

/// Text padded to `n` columns (`{:<n}` counts bytes of multi-byte characters oddly enough
/// to misalign a table of paths).
pub(crate) fn pad(text: &str, n: usize) -> String {
    let count = text.chars().count();
    format!("{text}{}", " ".repeat(n.saturating_sub(count)))
}

/// How an item ended, as a responder reads it: the collector's status, except that an item
/// whose acquisition failed on the host is FAILED however it was stored.
pub(crate) fn item_status(i: &Value) -> String {
    let status = s(&i["status"]).to_lowercase();
    match i["acquisition_status"].as_str() {
        Some("failed") => "FAILED".into(),
        Some("partial") if status == "sealed" => "sealed, gaps".into(),
        Some("source_vanished") if status == "sealed" => "sealed, vanished".into(),
        _ if matches!(status.as_str(), "failed" | "rejected") => status.to_uppercase(),
        _ => status,
    }
}

/// Why an item failed, when it did.
pub(crate) fn item_failure(i: &Value) -> Option<String> {
    let failed = i["acquisition_status"] == "failed"
        || matches!(i["status"].as_str(), Some("failed" | "rejected"));
    if !failed {
        return None;
    }
    let why = [&i["acquisition_error"], &i["error"], &i["collector_error"]]
        .into_iter()
        .find_map(|v| v.as_str().filter(|t| !t.is_empty()).map(printable))
        .unwrap_or_else(|| "no reason recorded".into());
    Some(why)
}

/// Items whose evidence is missing: failed acquisitions and items the collector refused.
pub(crate) fn failed_items(c: &Value) -> usize {
    c["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| item_failure(i).is_some())
        .count()
}

pub(crate) fn print_collection(c: &Value) {
    println!(
        "Collection {}  [{}]",
        s(&c["id"]),
        s(&c["status"]).to_lowercase()
    );
    println!("  host:      {} ({})", s(&c["hostname"]), s(&c["host_id"]));
    println!(
        "  profile:   {}   reason: {}",
        s(&c["profile"]),
        s(&c["reason"])
    );
    println!(
        "  requested: {} by {}   finished: {}",
        time_s(&c["requested_at"]),
        s(&c["requested_by"]),
        time_s(&c["finished_at"])
    );
    let items = c["items"].as_array().cloned().unwrap_or_default();
    let failed = failed_items(c);
    if failed > 0 {
        println!("  items ({}, {failed} FAILED):", items.len());
    } else {
        println!("  items ({}):", items.len());
    }
    const NAME: usize = 40;
    println!(
        "    {:<36}  {} {:>10}  {:<16} SHA-256",
        "ID",
        pad("NAME", NAME),
        "SIZE",
        "STATUS"
    );
    for i in &items {
        let failure = item_failure(i);
        let size = match (&failure, i["raw_len"].as_u64()) {
            (Some(_), _) | (None, None) => "-".into(),
            (None, Some(n)) => human(n),
        };
        println!(
            "    {:<36}  {} {:>10}  {:<16} {}",
            s(&i["id"]),
            pad(&mid(&s(&i["name"]), NAME), NAME),
            size,
            item_status(i),
            if failure.is_some() {
                "-".into()
            } else {
                s(&i["sha256"])
            }
        );
        if let Some(why) = failure {
            println!("      ↳ {why}");
        }
    }
    for e in c["errors"].as_array().into_iter().flatten() {
        println!("  error: {}", s(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_names_keep_both_ends_and_the_width() {
        let m = mid("/var/lib/docker/overlay2/abcdef/merged/etc/passwd", 20);
        assert_eq!(m.chars().count(), 20);
        assert!(m.starts_with("/var/lib/") && m.ends_with("/passwd"), "{m}");
        assert_eq!(mid("short", 20), "short");
        assert_eq!(pad("é", 3), "é  ");
    }

    #[test]
    fn times_are_shown_to_the_second() {
        assert_eq!(
            time_s(&json!("2024-05-01T12:00:01.123456789Z")),
            "2024-05-01T12:00:01Z"
        );
        assert_eq!(time_s(&json!(null)), "-");
        assert_eq!(time_s(&json!("not a time")), "not a time");
    }

    #[test]
    fn a_failed_acquisition_is_failed_whatever_was_stored() {
        let i = json!({"status": "sealed", "acquisition_status": "failed", "raw_len": 0,
                       "acquisition_error": "no physical memory source"});
        assert_eq!(item_status(&i), "FAILED");
        assert_eq!(
            item_failure(&i).as_deref(),
            Some("no physical memory source")
        );
        let ok = json!({"status": "sealed", "acquisition_status": "complete"});
        assert_eq!(item_status(&ok), "sealed");
        assert_eq!(item_failure(&ok), None);
    }
}
