//! `cairn`, the analyst CLI: everything goes through the HTTP API, as a detection system's would.
//! It depends on the protocol crate only (custody records, collection records), never on the
//! collector: what it can do, a script with a token can do too.

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod api;
mod evidence;
mod output;
mod timeline;

use api::Api;
use evidence::verify_log_locally;
pub use output::printable;
use output::{human, print_collection, s};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "cairn analyst CLI: request, inspect, export and verify evidence"
)]
pub struct Cli {
    /// Collector API base URL.
    #[arg(
        long,
        env = "CAIRN_API",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    api: String,
    /// API token (the collector's admin.token, or one made with `cairn-collector token api`).
    #[arg(
        long,
        env = "CAIRN_TOKEN",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    token: String,
    /// The collector's CA certificate (ca.pem in its data directory), to trust its HTTPS.
    #[arg(long, env = "CAIRN_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List enrolled hosts.
    Hosts,
    /// Request a collection from a host (agent id, hostname, cloud instance id or machine id).
    Collect {
        host: String,
        /// volatile, file (with --path), memory (with --pid or --container), full
        /// (volatile, memory and physical memory), triage, minimal, or disk (with --device).
        #[arg(long, default_value = "volatile")]
        profile: String,
        /// Why: recorded in the chain of custody.
        #[arg(long)]
        reason: String,
        /// Files to collect with the file profile (repeatable).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// The process to capture (memory, full): its core and its ancestors' cores.
        #[arg(long)]
        pid: Option<u32>,
        /// The container to capture (memory, full): a core of each of its processes.
        #[arg(long)]
        container: Option<String>,
        /// Block devices to image with the disk profile (repeatable): /dev/nvme1n1.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Wait until the collection is finished, showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Show a collection: status, items, sizes, hashes.
    Show { collection: String },
    /// List recent collections.
    Collections {
        #[arg(long)]
        host: Option<String>,
    },
    /// Show an item's manifest: source, host, hashes, chunks, gaps, acquisition times.
    Item { item: String },
    /// Write an item's exact raw bytes to a file, checking them against the manifest's SHA-256.
    Export {
        item: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Chain of custody.
    Custody {
        #[command(subcommand)]
        cmd: CustodyCmd,
    },
    /// Load an offline collection (`cairn-agent collect --out DIR`) into the collector.
    Import { dir: PathBuf },
    /// The timeline of a host (or --all): `cairn timeline HOST|--all [--from] [--to] [--kind]
    /// [--grep]`, `cairn timeline export -o FILE`, `cairn timeline searches`.
    Timeline(Box<timeline::TimelineArgs>),
}

#[derive(Subcommand)]
enum CustodyCmd {
    /// Check the custody chain and every stored byte of the collection; non-zero if anything is broken.
    Verify { collection: String },
    /// Print the custody log.
    Log { collection: String },
}

pub async fn run(cli: Cli) -> Result<i32> {
    let api = Api::new(&cli)?;
    match &cli.cmd {
        Cmd::Hosts => {
            let v = api.get("/api/v1/hosts").await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(0);
            }
            println!(
                "{:<36}  {:<20} {:<20} {:<20} {:<31} {:<9} {:<7} {:<6} {:<9} SINCE",
                "ID",
                "HOSTNAME",
                "INSTANCE",
                "AGENT",
                "LAST SEEN",
                "CONNECTED",
                "SENSOR",
                "LOST",
                "READINESS"
            );
            for h in v["hosts"].as_array().into_iter().flatten() {
                let st = &h["status"];
                println!(
                    "{:<36}  {:<20} {:<20} {:<20} {:<31} {:<9} {:<7} {:<6} {:<9} {}",
                    s(&h["id"]),
                    s(&h["hostname"]),
                    s(&h["instance_id"]),
                    s(&h["agent_version"]),
                    s(&h["last_seen"]),
                    if h["connected"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    s(&st["sensor_mode"]),
                    s(&st["events_lost"]),
                    s(&h["readiness"]),
                    s(&h["readiness_since"]),
                );
                if let Some(r) = st["sensor_reason"].as_str() {
                    println!("{:<38}sensor: {r}", "");
                }
            }
        }
        Cmd::Collect {
            host,
            profile,
            reason,
            paths,
            pid,
            container,
            devices,
            wait,
            timeout,
        } => {
            let v = api
                .post(
                    "/api/v1/collections",
                    &json!({"host": host, "profile": profile, "reason": reason, "paths": paths,
                            "pid": pid, "container_id": container, "devices": devices}),
                )
                .await?;
            let id = s(&v["id"]);
            if !wait {
                if cli.json {
                    println!("{v}");
                } else {
                    println!("{id}");
                    if v["agent_connected"].as_bool() == Some(false) {
                        eprintln!("note: the agent is not connected now; the command waits for it");
                    }
                }
                return Ok(0);
            }
            let c = wait_for(&api, &id, Duration::from_secs(*timeout), !cli.json).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print_collection(&c);
            }
            return Ok(match c["status"].as_str() {
                Some("sealed") => 0,
                Some("partial") => 3,
                _ => 4,
            });
        }
        Cmd::Show { collection } => {
            let c = api
                .get(&format!("/api/v1/collections/{collection}"))
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print_collection(&c);
            }
        }
        Cmd::Collections { host } => {
            let q = host
                .as_ref()
                .map(|h| format!("?host={h}"))
                .unwrap_or_default();
            let v = api.get(&format!("/api/v1/collections{q}")).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for c in v["collections"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<8} {:<9} {}  {}",
                        s(&c["id"]),
                        s(&c["profile"]),
                        s(&c["status"]),
                        s(&c["requested_at"]),
                        s(&c["reason"])
                    );
                }
            }
        }
        Cmd::Item { item } => {
            let v = api.get(&format!("/api/v1/items/{item}")).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("Item {}  [{}]", s(&v["item_id"]), s(&v["status"]));
                println!("  collection: {}", s(&v["collection_id"]));
                println!("  kind:       {}   source: {}", s(&v["kind"]), v["source"]);
                println!(
                    "  acquired:   {} → {}",
                    s(&v["acquisition_start"]),
                    s(&v["acquisition_end"])
                );
                println!(
                    "  raw bytes:  {} in {} chunks   acquisition: {}",
                    s(&v["raw_len"]),
                    s(&v["chunk_count"]),
                    s(&v["acquisition_status"])
                );
                println!("  SHA-256:    {}", s(&v["sha256"]));
                for g in v["gaps"].as_array().into_iter().flatten() {
                    println!(
                        "  gap: {} bytes at {} ({}), filled with {}",
                        s(&g["length"]),
                        s(&g["offset"]),
                        s(&g["reason"]),
                        s(&g["filled_with"])
                    );
                }
                if !v["error"].is_null() {
                    println!("  note: {}", s(&v["error"]));
                }
            }
        }
        Cmd::Export { item, output } => {
            return evidence::export(&api, item, output, cli.json).await
        }
        Cmd::Custody {
            cmd: CustodyCmd::Verify { collection },
        } => {
            let v = api
                .post(
                    &format!("/api/v1/collections/{collection}/verify"),
                    &json!({}),
                )
                .await?;
            // Check the signed chain here too, with the collector's public key, so the verdict
            // does not rest on the server's word alone.
            let log = api
                .get(&format!("/api/v1/collections/{collection}/custody"))
                .await?;
            let local = verify_log_locally(&log);
            let ok = v["ok"].as_bool() == Some(true) && local.is_ok();
            if cli.json {
                let mut out = v.clone();
                out["client_chain_check"] = json!(local.as_ref().err().map(|e| e.to_string()));
                out["ok"] = json!(ok);
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if ok {
                println!(
                    "custody intact: {} records, {} items, {} chunks ({}) re-verified; signatures checked with key {}",
                    s(&v["records_checked"]),
                    s(&v["items_checked"]),
                    s(&v["chunks_checked"]),
                    human(v["bytes_checked"].as_u64().unwrap_or(0)),
                    s(&log["public_key"])
                );
            } else {
                if let Some(e) = v["error"].as_str() {
                    println!("CUSTODY BROKEN: {e}");
                }
                if let Err(e) = &local {
                    println!("CUSTODY BROKEN (client check): {e}");
                }
            }
            return Ok(if ok { 0 } else { 1 });
        }
        Cmd::Custody {
            cmd: CustodyCmd::Log { collection },
        } => {
            let v = api
                .get(&format!("/api/v1/collections/{collection}/custody"))
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for r in v["records"].as_array().into_iter().flatten() {
                    println!(
                        "{:>3}  {}  {:<18} {:<40} {}",
                        s(&r["seq"]),
                        s(&r["time"]),
                        s(&r["action"]),
                        s(&r["actor"]),
                        r["details"]
                    );
                }
            }
        }
        Cmd::Import { dir } => return evidence::import(&api, dir, cli.json).await,
        Cmd::Timeline(args) => return timeline::run(&api, args, cli.json).await,
    }
    Ok(0)
}

async fn wait_for(api: &Api, id: &str, timeout: Duration, progress: bool) -> Result<Value> {
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    if !progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let c = api.get(&format!("/api/v1/collections/{id}")).await?;
        let status = s(&c["status"]);
        let items = c["items"].as_array().cloned().unwrap_or_default();
        let sealed = items.iter().filter(|i| i["status"] == "sealed").count();
        let chunks: u64 = items
            .iter()
            .filter_map(|i| i["chunks_received"].as_u64())
            .sum();
        bar.set_message(format!(
            "{status}: {sealed}/{} items sealed, {chunks} chunks received",
            items.len()
        ));
        if matches!(status.as_str(), "sealed" | "partial" | "failed") {
            bar.finish_and_clear();
            return Ok(c);
        }
        if start.elapsed() > timeout {
            bar.finish_and_clear();
            bail!(
                "collection {id} is still {status} after {}s; check again with `cairn show {id}`",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
