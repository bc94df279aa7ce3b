//! What the CLI prints for people: values made safe for a terminal, sizes, collections.

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

pub(crate) fn print_collection(c: &Value) {
    println!("Collection {}  [{}]", s(&c["id"]), s(&c["status"]));
    println!("  host:      {} ({})", s(&c["hostname"]), s(&c["host_id"]));
    println!(
        "  profile:   {}   reason: {}",
        s(&c["profile"]),
        s(&c["reason"])
    );
    println!(
        "  requested: {} by {}   finished: {}",
        s(&c["requested_at"]),
        s(&c["requested_by"]),
        s(&c["finished_at"])
    );
    let items = c["items"].as_array().cloned().unwrap_or_default();
    println!("  items ({}):", items.len());
    println!(
        "    {:<36}  {:<22} {:>10}  {:<9} SHA-256",
        "ID", "NAME", "SIZE", "STATUS"
    );
    for i in &items {
        println!(
            "    {:<36}  {:<22} {:>10}  {:<9} {}",
            s(&i["id"]),
            s(&i["name"]),
            i["raw_len"]
                .as_u64()
                .map(human)
                .unwrap_or_else(|| "-".into()),
            s(&i["status"]),
            s(&i["sha256"])
        );
    }
    for e in c["errors"].as_array().into_iter().flatten() {
        println!("  error: {}", s(e));
    }
}
