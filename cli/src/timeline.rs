//! `cairn timeline`: the timeline as a table, its export, saved searches.

use crate::api::Api;
use crate::evidence::Sink;
use crate::exit::{fail, Exit};
use crate::output::{clip, pad, s, time_s};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TimelineArgs {
    #[command(subcommand)]
    cmd: Option<TimelineCmd>,
    #[command(flatten)]
    query: QueryArgs,
    /// Also save this query under a name (`--saved NAME` runs it again).
    #[arg(long)]
    save: Option<String>,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum TimelineCmd {
    /// Write the timeline to a file: Timesketch JSONL (default), Timesketch CSV or plain JSONL.
    Export {
        #[command(flatten)]
        query: QueryArgs,
        /// timesketch-jsonl, timesketch-csv or jsonl.
        #[arg(long, default_value = "timesketch-jsonl")]
        format: String,
        /// A file, or `-` for stdout.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// List saved searches.
    Searches,
    /// Which items the timeline was built from: parser, events, what could not be parsed.
    Sources {
        /// Only this host's.
        host: Option<String>,
    },
}

#[derive(Args, Clone)]
struct QueryArgs {
    /// Host (agent id, hostname, instance id or machine id); several separated by commas.
    host: Option<String>,
    /// Every host.
    #[arg(long, conflicts_with = "host")]
    all: bool,
    /// A query in the query language: `kind:process_exec -user:root dst_port:(22 OR 3389)`,
    /// `host:web-1`, free words search the message (the console's search box).
    #[arg(long, short = 'q')]
    query: Option<String>,
    /// The last 15m, 1h, 24h, 7d (stays relative when saved).
    #[arg(long, conflicts_with = "from")]
    last: Option<String>,
    /// From this time: RFC 3339, or relative to now (-1h, -15m, -7d).
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Up to this time: RFC 3339, or relative to now.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Oldest first (the default is newest first).
    #[arg(long)]
    oldest: bool,
    /// Only these kinds (repeatable or comma-separated): process_exec, ssh_login, sudo, …
    #[arg(long)]
    kind: Vec<String>,
    /// Only messages containing this text (case-insensitive).
    #[arg(long)]
    grep: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// A container id or its first 12 characters.
    #[arg(long)]
    container: Option<String>,
    /// Only events from this source (ebpf, auth.log, bash_history, file, bodyfile…).
    #[arg(long)]
    source: Option<String>,
    /// Start from a saved search.
    #[arg(long)]
    saved: Option<String>,
    /// Most events shown (the table) — the export has no limit.
    #[arg(long, default_value_t = 500)]
    limit: u32,
}

impl QueryArgs {
    fn pairs(&self) -> Result<Vec<(&'static str, String)>> {
        if self.host.is_none() && !self.all && self.saved.is_none() && self.query.is_none() {
            return fail(
                Exit::Usage,
                "name a host, or pass --all for every host (or --saved NAME, or --query 'host:NAME …')",
            );
        }
        let mut p = Vec::new();
        let mut put = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                p.push((k, v.clone()));
            }
        };
        put("host", &self.host);
        put("query", &self.query);
        put("last", &self.last);
        put("from", &self.from);
        put("to", &self.to);
        put("q", &self.grep);
        put("user", &self.user);
        put("container", &self.container);
        put("source", &self.source);
        put("saved", &self.saved);
        if !self.kind.is_empty() {
            p.push(("kind", self.kind.join(",")));
        }
        if self.oldest {
            p.push(("order", "oldest".into()));
        }
        Ok(p)
    }
}

fn facet_line(name: &str, v: &Value) -> String {
    let parts: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .take(8)
        .map(|x| {
            let label = x["hostname"]
                .as_str()
                .map_or_else(|| s(&x["value"]), str::to_string);
            format!("{label} {}", x["count"])
        })
        .collect();
    format!("  {name:<10} {}", parts.join(", "))
}

pub async fn run(api: &Api, args: &TimelineArgs, json_out: bool) -> Result<i32> {
    match &args.cmd {
        Some(TimelineCmd::Export {
            query,
            format,
            output,
            force,
        }) => return export(api, query, format, output, *force, json_out).await,
        Some(TimelineCmd::Sources { host }) => {
            return sources(api, host.as_deref(), json_out).await
        }
        Some(TimelineCmd::Searches) => {
            let v = api.get("/api/v1/timeline/searches").await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for x in v["searches"].as_array().into_iter().flatten() {
                    println!("{:<24} {}", s(&x["name"]), x["query"]);
                }
            }
            return Ok(0);
        }
        None => {}
    }
    let q = &args.query;
    let pairs = q.pairs()?;
    if let Some(name) = &args.save {
        let query: serde_json::Map<String, Value> = pairs
            .iter()
            .filter(|(k, _)| *k != "saved")
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        api.post(
            "/api/v1/timeline/searches",
            &json!({"name": name, "query": query}),
        )
        .await?;
        if !json_out {
            eprintln!("saved as {name:?}");
        }
    }
    let mut events: Vec<Value> = Vec::new();
    let mut facets = Value::Null;
    let mut cursor: Option<String> = None;
    loop {
        let mut page = pairs.clone();
        page.push((
            "limit",
            (q.limit as usize - events.len()).min(1000).to_string(),
        ));
        if let Some(c) = &cursor {
            page.push(("cursor", c.clone()));
        }
        let v: Value = api
            .send(api.http.get(api.url("/api/v1/timeline")).query(&page))
            .await?
            .json()
            .await?;
        if facets.is_null() {
            facets = v["facets"].clone();
        }
        events.extend(v["events"].as_array().cloned().unwrap_or_default());
        cursor = v["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || events.len() >= q.limit as usize {
            break;
        }
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"events": events, "facets": facets, "next_cursor": cursor})
            )?
        );
        return Ok(0);
    }
    println!(
        "{:<21}  {:<18} {:<13} {:<16} {:<8} {:>7}  MESSAGE",
        "TIME (UTC)", "HOST", "SOURCE", "KIND", "USER", "PID"
    );
    let mut inferred = false;
    for e in &events {
        // A time the parser had to guess (no year in a syslog line, a history line's file
        // mtime) is marked, so nobody reads it as exact.
        let time = if e["time_inferred"] == true {
            inferred = true;
            format!("~{}", time_s(&e["time"]))
        } else {
            format!(" {}", time_s(&e["time"]))
        };
        println!(
            "{:<21}  {:<18} {:<13} {:<16} {:<8} {:>7}  {}",
            time,
            clip(
                e["hostname"]
                    .as_str()
                    .unwrap_or(e["host_id"].as_str().unwrap_or("-")),
                18
            ),
            clip(&s(&e["source"]), 13),
            clip(&s(&e["kind"]), 16),
            clip(&s(&e["user"]), 8),
            s(&e["pid"]),
            clip(&s(&e["message"]), 120)
        );
    }
    if inferred {
        println!(
            "~ marks a time that was inferred (no year or no timestamp in the source), not read"
        );
    }
    let total = facets["total"].as_u64().unwrap_or(events.len() as u64);
    println!(
        "{} of {}{} events{}",
        events.len(),
        total,
        if facets["exact"] == json!(false) {
            "+"
        } else {
            ""
        },
        if cursor.is_some() {
            " (raise --limit or use `cairn timeline export` for the rest)"
        } else {
            ""
        }
    );
    for k in ["host", "kind", "source", "user", "container"] {
        if facets[k].as_array().is_some_and(|a| !a.is_empty()) {
            println!("{}", facet_line(k, &facets[k]));
        }
    }
    Ok(0)
}

async fn export(
    api: &Api,
    q: &QueryArgs,
    format: &str,
    output: &std::path::Path,
    force: bool,
    json_out: bool,
) -> Result<i32> {
    let mut pairs = q.pairs()?;
    pairs.push(("format", format.to_string()));
    let mut sink = Sink::open(output, force)?;
    let mut resp = api
        .send(
            api.http
                .get(api.url("/api/v1/timeline/export"))
                .query(&pairs),
        )
        .await?;
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(b) = resp
        .chunk()
        .await
        .with_context(|| format!("timeline export interrupted; {}", sink.partial()))?
    {
        lines += b.iter().filter(|c| **c == b'\n').count() as u64;
        bytes += b.len() as u64;
        sink.write(&b)?;
    }
    let to_stdout = sink.is_stdout();
    let dest = sink.name();
    sink.commit()?;
    let events = if format.ends_with("csv") {
        lines.saturating_sub(1)
    } else {
        lines
    };
    if json_out && !to_stdout {
        println!(
            "{}",
            json!({"path": output, "format": format, "events": events, "bytes": bytes})
        );
    } else {
        let line = format!("{events} events written to {dest} ({format}, {bytes} bytes)");
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(0)
}

/// `cairn timeline sources`: the items the timeline was built from.
async fn sources(api: &Api, host: Option<&str>, json_out: bool) -> Result<i32> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(h) = host {
        q.push(("host", h.to_string()));
    }
    let resp = api
        .send(api.http.get(api.url("/api/v1/timeline/sources")).query(&q))
        .await?;
    let v = api.json(resp).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let names = crate::collections::hostnames(api).await?;
    println!(
        "{:<36}  {:<18} {} {:<14} {:>8} {:>8}  {:<20}  ERROR",
        "ITEM",
        "HOST",
        pad("NAME", 28),
        "PARSER",
        "EVENTS",
        "UNPARSED",
        "BUILT (UTC)"
    );
    for x in v["items"].as_array().into_iter().flatten() {
        let host = names
            .get(&s(&x["host_id"]))
            .cloned()
            .unwrap_or_else(|| s(&x["host_id"]));
        println!(
            "{:<36}  {} {} {:<14} {:>8} {:>8}  {:<20}  {}",
            s(&x["item_id"]),
            pad(&clip(&host, 18), 18),
            pad(&crate::output::mid(&s(&x["name"]), 28), 28),
            s(&x["parser"]),
            s(&x["events"]),
            s(&x["unparsed"]),
            time_s(&x["built_at"]),
            if x["error"].is_null() {
                String::new()
            } else {
                clip(&s(&x["error"]), 80)
            }
        );
    }
    Ok(0)
}
