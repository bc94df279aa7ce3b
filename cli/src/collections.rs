//! Collections: requesting one (flags the profile would ignore refused before sending),
//! waiting for it with progress, showing it, listing them, and one item's manifest.

use crate::api::{seg, Api};
use crate::exit::{fail, Exit};
use crate::output::{
    clip, failed_items, human, item_failure, item_status, mid, pad, print_collection, s, time_s,
};
use anyhow::Result;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Whether a profile uses one of the request's targets.
type Uses = fn(&cairn_protocol::manifest::ProfileTakes) -> bool;

/// What `cairn collect` asks for.
pub(crate) struct Request<'a> {
    pub host: &'a str,
    pub profile: &'a str,
    pub reason: &'a str,
    pub paths: &'a [String],
    pub pid: Option<u32>,
    pub container: Option<&'a str>,
    pub devices: &'a [String],
}

impl Request<'_> {
    /// A flag the profile would ignore is refused here, before anything is sent: the same
    /// table the collector refuses by.
    fn check(&self) -> Result<()> {
        use cairn_protocol::manifest::{profile_takes, PROFILES};
        if !PROFILES.contains(&self.profile) {
            return fail(
                Exit::Usage,
                format!(
                    "unknown profile {:?}: use one of {}",
                    self.profile,
                    PROFILES.join(", ")
                ),
            );
        }
        let takes = profile_takes(self.profile);
        let using = |f: Uses| -> String {
            let names: Vec<&str> = PROFILES
                .iter()
                .copied()
                .filter(|p| f(&profile_takes(p)))
                .collect();
            names.join(", ")
        };
        let given: [(bool, &str, Uses); 4] = [
            (self.pid.is_some(), "--pid", |t| t.pid),
            (self.container.is_some(), "--container", |t| t.container),
            (!self.paths.is_empty(), "--path", |t| t.paths),
            (!self.devices.is_empty(), "--device", |t| t.devices),
        ];
        for (set, flag, uses) in given {
            if set && !uses(&takes) {
                return fail(
                    Exit::Usage,
                    format!(
                        "profile {:?} does not use {flag}, so it is refused rather than ignored; profiles that use {flag}: {}",
                        self.profile,
                        using(uses)
                    ),
                );
            }
        }
        if self.reason.trim().is_empty() {
            return fail(
                Exit::Usage,
                "--reason must say why evidence is collected: it goes into the custody log",
            );
        }
        Ok(())
    }
}

/// `cairn collect`: the collection's id (or, with `wait`, the finished collection).
pub(crate) async fn collect(
    api: &Api,
    req: &Request<'_>,
    wait: Option<(Duration, bool)>,
    json_out: bool,
) -> Result<i32> {
    req.check()?;
    let v = api
        .post(
            "/api/v1/collections",
            &json!({"host": req.host, "profile": req.profile, "reason": req.reason,
                    "paths": req.paths, "pid": req.pid, "container_id": req.container,
                    "devices": req.devices}),
        )
        .await?;
    let id = s(&v["id"]);
    let connected = v["agent_connected"].as_bool() != Some(false);
    let Some((timeout, progress)) = wait else {
        if json_out {
            println!("{v}");
        } else {
            println!("{id}");
        }
        if !connected {
            eprintln!("note: the agent is not connected now; the collection starts when it connects (`cairn hosts` shows CONNECTED)");
        }
        return Ok(0);
    };
    if !connected {
        eprintln!("note: the agent is not connected now; waiting for it to connect");
    }
    let c = wait_for(api, &id, timeout, progress && !json_out).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_collection(&c);
    }
    Ok(finished_code(&c))
}

/// 0 only for a collection that holds all its evidence.
pub(crate) fn finished_code(c: &Value) -> i32 {
    match c["status"].as_str() {
        Some("sealed") if failed_items(c) == 0 => Exit::Ok.code(),
        _ => Exit::Partial.code(),
    }
}

/// Bytes received so far and, when every begun item's size is known, the bytes still to come:
/// the collector's `progress` of the collection.
fn transferred(c: &Value) -> (u64, Option<u64>) {
    let p = &c["progress"];
    let got = p["bytes_received"].as_u64().unwrap_or(0);
    let left = p["bytes_expected"].as_u64().map(|e| e.saturating_sub(got));
    (got, left)
}

fn duration(secs: u64) -> String {
    match secs {
        0..=99 => format!("{secs}s"),
        100..=5999 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

async fn wait_for(api: &Api, id: &str, timeout: Duration, progress: bool) -> Result<Value> {
    let start = Instant::now();
    // On a terminal a spinner; elsewhere (--progress into a log) a line every few seconds.
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new_spinner();
    if !terminal || !progress {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    let mut last_line = None::<Instant>;
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    loop {
        let c = api.get(&format!("/api/v1/collections/{}", seg(id))).await?;
        let status = s(&c["status"]).to_lowercase();
        let items = c["items"].as_array().cloned().unwrap_or_default();
        let sealed = items.iter().filter(|i| i["status"] == "sealed").count();
        let (got, left) = transferred(&c);
        let now = Instant::now();
        samples.push((now, got));
        samples.retain(|(t, _)| now.duration_since(*t) <= Duration::from_secs(10));
        let rate = match samples.first() {
            Some((t0, b0)) if now.duration_since(*t0) >= Duration::from_millis(500) => {
                Some((got.saturating_sub(*b0)) as f64 / now.duration_since(*t0).as_secs_f64())
            }
            _ => None,
        };
        let mut msg = format!(
            "{status}: {sealed}/{} items, {} received",
            items.len(),
            human(got)
        );
        if let Some(r) = rate {
            msg.push_str(&format!(", {}/s", human(r as u64)));
            if let Some(left) = left.filter(|_| r > 0.0) {
                msg.push_str(&format!(", ETA {}", duration((left as f64 / r) as u64)));
            }
        }
        let done = matches!(status.as_str(), "sealed" | "partial" | "failed");
        if progress {
            if terminal {
                bar.set_message(msg);
            } else if done || last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                eprintln!("{msg}");
                last_line = Some(Instant::now());
            }
        }
        if done {
            bar.finish_and_clear();
            return Ok(c);
        }
        if start.elapsed() > timeout {
            bar.finish_and_clear();
            return fail(
                Exit::Error,
                format!(
                    "collection {id} is still {status} after {}s; check again with `cairn show {id}`",
                    timeout.as_secs()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn show(api: &Api, collection: &str, json_out: bool) -> Result<i32> {
    let c = api
        .get(&format!("/api/v1/collections/{}", seg(collection)))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_collection(&c);
    }
    Ok(0)
}

/// Host ids to names, for tables.
pub(crate) async fn hostnames(api: &Api) -> Result<HashMap<String, String>> {
    let v = api.get("/api/v1/hosts").await?;
    Ok(v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| (s(&h["id"]), s(&h["hostname"])))
        .collect())
}

pub(crate) async fn list(api: &Api, host: Option<&str>, limit: u32, json_out: bool) -> Result<i32> {
    let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    if let Some(h) = host {
        q.push(("host", h.to_string()));
    }
    let resp = api
        .send(api.http.get(api.url("/api/v1/collections")).query(&q))
        .await?;
    let v = api.json(resp).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let names = hostnames(api).await?;
    println!(
        "{:<36}  {:<20} {:<9} {:<8} {:<20}  REASON",
        "ID", "HOST", "PROFILE", "STATUS", "REQUESTED (UTC)"
    );
    for c in v["collections"].as_array().into_iter().flatten() {
        let host = names
            .get(&s(&c["host_id"]))
            .cloned()
            .unwrap_or_else(|| s(&c["host_id"]));
        let errors = c["errors"].as_array().map_or(0, Vec::len);
        let mut reason = clip(&s(&c["reason"]), 60);
        if errors > 0 {
            // The item's id is in `cairn show`; here the name and the reason matter.
            let first = c["errors"][0].as_str().map(|e| {
                let short = match e.strip_prefix("item ") {
                    Some(rest) if rest.get(36..37) == Some(" ") => &rest[37..],
                    _ => e,
                };
                crate::output::printable(short)
            });
            reason.push_str(&format!(
                "  ({errors} error{}: {})",
                if errors == 1 { "" } else { "s" },
                clip(first.as_deref().unwrap_or("-"), 100)
            ));
        }
        println!(
            "{:<36}  {} {:<9} {:<8} {:<20}  {}",
            s(&c["id"]),
            pad(&mid(&host, 20), 20),
            s(&c["profile"]),
            s(&c["status"]).to_lowercase(),
            time_s(&c["requested_at"]),
            reason
        );
    }
    Ok(0)
}

/// A source as lines a person reads: what it is, then the facts the agent recorded.
fn source_lines(src: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, label) in [
        ("name", "name"),
        ("path", "path"),
        ("device", "device"),
        ("pid", "pid"),
        ("memory_source", "memory source"),
        ("media_type", "type"),
    ] {
        if !src[key].is_null() {
            lines.push(format!("{label}: {}", s(&src[key])));
        }
    }
    for (k, v) in src["details"].as_object().into_iter().flatten() {
        let text = match v {
            Value::Object(_) | Value::Array(_) => clip(&s(v), 100),
            _ => s(v),
        };
        lines.push(format!("{}: {text}", crate::output::printable(k)));
    }
    lines
}

pub(crate) async fn item(api: &Api, item: &str, json_out: bool) -> Result<i32> {
    let v = api.get(&format!("/api/v1/items/{}", seg(item))).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("Item {}  [{}]", s(&v["item_id"]), item_status(&v));
    println!("  collection:  {}", s(&v["collection_id"]));
    println!("  kind:        {}", s(&v["kind"]));
    let src = source_lines(&v["source"]);
    if let Some((first, rest)) = src.split_first() {
        println!("  source:      {first}");
        for l in rest {
            println!("               {l}");
        }
    }
    println!(
        "  acquired:    {} → {}   acquisition: {}",
        time_s(&v["acquisition_start"]),
        time_s(&v["acquisition_end"]),
        s(&v["acquisition_status"]).to_lowercase()
    );
    println!(
        "  raw bytes:   {} in {} chunks",
        s(&v["raw_len"]),
        s(&v["chunk_count"])
    );
    println!("  SHA-256:     {}", s(&v["sha256"]));
    for g in v["gaps"].as_array().into_iter().flatten() {
        println!(
            "  gap: {} bytes at {} ({}), filled with {}",
            s(&g["length"]),
            s(&g["offset"]),
            s(&g["reason"]),
            s(&g["filled_with"])
        );
    }
    if let Some(why) = item_failure(&v) {
        println!("  FAILED:      {why}");
    } else if !v["error"].is_null() {
        println!("  note:        {}", s(&v["error"]));
    }
    Ok(0)
}
