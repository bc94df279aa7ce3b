//! The page shell and the small pieces every page shows the same way: times without the
//! nanoseconds, sizes, statuses (a failed acquisition is shown failed, never sealed), and
//! text that may carry control characters.

use super::Viewer;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// A page with the navigation and the signed-in person.
pub fn page(title: &str, viewer: &Viewer, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf" content=(viewer.csrf);
                title { (title) " — cairn" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "cairn" }
                    nav {
                        @for (href, label) in [("/", "Fleet"), ("/architecture", "Architecture"), ("/collections", "Collections"), ("/timeline", "Timeline"), ("/cases", "Cases")] {
                            a href=(href) class=[(current == label).then_some("current")] { (label) }
                        }
                    }
                    form.signout method="post" action="/logout" {
                        span.who { (viewer.name) " · " (viewer.role.as_str()) }
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                link rel="stylesheet" href="/assets/console.css";
            }
            body { (body) }
        }
    }
}

/// RFC 3339 as `2026-12-01 21:58:41Z`: seconds are what a person compares.
pub fn time(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    match t.split_once('.') {
        Some((secs, rest)) => {
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{secs}{zone}")
        }
        None => t,
    }
}

pub fn opt_time(t: &Option<String>) -> String {
    t.as_deref().map(time).unwrap_or_else(|| "—".into())
}

pub fn bytes(n: u64) -> String {
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

/// A status as a badge; its class says how it went (`ok`, `warn`, `bad`, `wait`).
pub fn status(s: &str) -> Markup {
    let class = match s {
        "sealed" | "complete" | "pass" | "connected" | "verified" => "ok",
        "partial" | "warn" | "paused" | "queued" | "source_vanished" => "warn",
        "failed" | "rejected" | "fail" | "broken" | "acquisition failed" => "bad",
        _ => "wait",
    };
    html! { span class={"badge " (class)} { (s) } }
}

/// What a person should see for an item: the collector's status, unless the host could not
/// acquire it — then it failed, whatever was sealed.
pub fn item_status(collector_status: &str, acquisition: Option<&str>) -> String {
    match acquisition {
        Some("failed") => "acquisition failed".into(),
        Some("partial") if collector_status == "sealed" => "partial".into(),
        Some("source_vanished") if collector_status == "sealed" => "source_vanished".into(),
        _ => collector_status.into(),
    }
}

/// Text that may hold control characters (argv, file names, log lines), made visible.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// A JSON value as short text.
pub fn val(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// An inline SVG is trusted markup we drew ourselves from numbers only.
pub fn svg(markup: String) -> PreEscaped<String> {
    PreEscaped(markup)
}
