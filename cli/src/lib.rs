//! `cairn`, the analyst CLI: everything goes through the HTTP API, as a detection system's would.
//! It depends on the protocol crate only (custody records, collection records), never on the
//! collector: what it can do, a script with a token can do too.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod timeline;

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

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn new(cli: &Cli) -> Result<Api> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10));
        if let Some(p) = &cli.ca_cert {
            let pem = std::fs::read(p)
                .with_context(|| format!("cannot read CA certificate {}", p.display()))?;
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&pem)
                    .context("--ca-cert is not a PEM certificate")?,
            );
        } else if cli.api.starts_with("https://") {
            bail!("to trust the collector's HTTPS, pass its CA with --ca-cert FILE or CAIRN_CA_CERT (ca.pem in the collector's data directory)");
        }
        Ok(Api {
            base: cli.api.trim_end_matches('/').to_string(),
            token: cli.token.clone(),
            http: b.build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the collector API at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or(body);
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (set CAIRN_TOKEN or --token)"
        } else {
            ""
        };
        bail!("collector answered {status}: {msg}{hint}")
    }

    async fn get(&self, path: &str) -> Result<Value> {
        Ok(self
            .send(self.http.get(self.url(path)))
            .await?
            .json()
            .await?)
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self
            .send(self.http.post(self.url(path)).json(body))
            .await?
            .json()
            .await?)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn human(n: u64) -> String {
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

fn print_collection(c: &Value) {
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
        Cmd::Export { item, output } => return export(&api, item, output, cli.json).await,
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
        Cmd::Import { dir } => return import(&api, dir, cli.json).await,
        Cmd::Timeline(args) => return timeline::run(&api, args, cli.json).await,
    }
    Ok(0)
}

fn verify_log_locally(log: &Value) -> Result<()> {
    use ed25519_dalek::Verifier;
    let records: Vec<cairn_protocol::custody::CustodyRecord> =
        serde_json::from_value(log["records"].clone())?;
    let key_hex = log["public_key"]
        .as_str()
        .context("custody log has no public key")?;
    let key_bytes: [u8; 32] = hex::decode(key_hex)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("public key is not 32 bytes"))?;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)?;
    cairn_protocol::custody::verify_chain(&records, |h, sig| {
        let (Ok(h), Ok(sig)) = (hex::decode(h), hex::decode(sig)) else {
            return false;
        };
        ed25519_dalek::Signature::from_slice(&sig).is_ok_and(|sig| vk.verify(&h, &sig).is_ok())
    })?;
    Ok(())
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

/// The SHA-256 the custody chain sealed an item with, from a chain checked here with the
/// collector's public key: an export is compared with that, not with the database's word.
async fn sealed_sha256(api: &Api, collection: &str, item: &str) -> Result<String> {
    let log = api
        .get(&format!("/api/v1/collections/{collection}/custody"))
        .await?;
    verify_log_locally(&log).context("the collection's custody chain does not verify")?;
    log["records"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|r| r["action"] == "item_sealed" && r["details"]["item_id"] == item)
        .and_then(|r| r["details"]["sha256"].as_str().map(str::to_string))
        .with_context(|| {
            format!("item {item} has no item_sealed record in the custody chain of collection {collection}")
        })
}

async fn export(api: &Api, item: &str, output: &PathBuf, json_out: bool) -> Result<i32> {
    let meta = api.get(&format!("/api/v1/items/{item}")).await?;
    let expected = sealed_sha256(api, &s(&meta["collection_id"]), item).await?;
    if s(&meta["sha256"]) != expected {
        bail!(
            "item {item} says SHA-256 {}, its custody chain sealed {expected}: not exported; run `cairn custody verify {}`",
            s(&meta["sha256"]),
            s(&meta["collection_id"])
        );
    }
    let mut resp = api
        .send(api.http.get(api.url(&format!("/api/v1/items/{item}/raw"))))
        .await?;
    let total = resp.content_length().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    if json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let tmp = output.with_extension("partial");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(b) = resp.chunk().await.context(
        "download interrupted (the collector refuses to serve a chunk that fails verification)",
    )? {
        h.update(&b);
        f.write_all(&b)?;
        n += b.len() as u64;
        bar.set_position(n);
    }
    f.flush()?;
    drop(f);
    bar.finish_and_clear();
    let got = hex::encode(h.finalize());
    if got != expected {
        bail!(
            "downloaded {n} bytes hash to {got}, custody sealed {expected}; kept as {}",
            tmp.display()
        );
    }
    std::fs::rename(&tmp, output)?;
    if json_out {
        println!(
            "{}",
            json!({"item": item, "path": output, "bytes": n, "sha256": got})
        );
    } else {
        println!(
            "{}  {}  ({} bytes, matches the SHA-256 sealed in custody)",
            got,
            output.display(),
            n
        );
    }
    Ok(0)
}

async fn import(api: &Api, dir: &std::path::Path, json_out: bool) -> Result<i32> {
    let rec_path = dir.join("collection.json");
    let rec_text = std::fs::read_to_string(&rec_path).with_context(|| {
        format!(
            "cannot read {} — is this a directory written by `cairn-agent collect --out`?",
            rec_path.display()
        )
    })?;
    let rec: cairn_protocol::manifest::CollectionRecord = serde_json::from_str(&rec_text)
        .with_context(|| format!("{} is not a collection record", rec_path.display()))?;
    let cid = rec.request.collection_id.clone();
    api.send(
        api.http
            .post(api.url("/api/v1/import/collections"))
            .header("content-type", "application/json")
            .body(rec_text),
    )
    .await?;
    let mut ok_items = Vec::new();
    let mut errors = rec.errors.clone();
    for item in &rec.items {
        let path = dir.join("items").join(format!("{item}.cairn"));
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("item {item}: cannot read {}: {e}", path.display()));
                continue;
            }
        };
        let body = reqwest::Body::wrap_stream(tokio_util_stream(file));
        match api
            .send(
                api.http
                    .put(api.url(&format!("/api/v1/import/collections/{cid}/items/{item}")))
                    .body(body),
            )
            .await
        {
            Ok(r) => {
                let v: Value = r.json().await?;
                if !json_out {
                    eprintln!("imported {item}  {}", s(&v["sha256"]));
                }
                ok_items.push(item.clone());
            }
            Err(e) => errors.push(format!("item {item}: {e:#}")),
        }
    }
    let c = api
        .post(
            &format!("/api/v1/import/collections/{cid}/finish"),
            &json!({"items": rec.items, "errors": errors}),
        )
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print_collection(&c);
    }
    Ok(if c["status"] == "sealed" { 0 } else { 3 })
}

/// A file as a stream of byte blocks, for a streaming request body.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}
