//! `cairn`, the analyst CLI: everything goes through the HTTP API, as a detection system's would.
//! It depends on the protocol crate only (custody records, collection records), never on the
//! collector: what it can do, a script with a token can do too.

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

mod api;
mod collections;
mod containment;
mod evidence;
mod exit;
mod hosts;
mod output;
mod timeline;

use api::{seg, Api};
use evidence::verify_log_locally;
pub use exit::{code_of, Exit};
pub use output::printable;
use output::{human, s, time_s};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "cairn analyst CLI: request, inspect, export and verify evidence",
    after_help = exit::HELP
)]
pub struct Cli {
    /// Collector API base URL (HTTPS: the collector's --api-listen).
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
        hide_default_value = true,
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
    /// List enrolled hosts (with the readiness checks that fail); `hosts --sort score` puts
    /// the odd ones out among their peers first; `hosts readiness HOST`, `hosts retire HOST`.
    Hosts {
        /// `name` (the default) or `score`: each host's outlier score among its peers, with
        /// its reasons, highest first.
        #[arg(long, value_parser = ["name", "score"])]
        sort: Option<String>,
        /// With `--sort score`: the profiling window (`1h`, `24h`, `7d`; default 24h).
        #[arg(long)]
        window: Option<String>,
        #[command(subcommand)]
        cmd: Option<HostsCmd>,
    },
    /// The fleet by architecture (VPC, scaling group): each group's members scored by how
    /// many of their peers share what they did, the odd ones out first with their reasons.
    Fleet {
        /// The profiling window (`1h`, `24h`, `7d`; default 24h).
        #[arg(long)]
        window: Option<String>,
    },
    /// Request a collection from a host (hostname, agent id or prefix, cloud instance id or
    /// machine id).
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
        /// The container to capture (memory, full) or triage (triage, minimal).
        #[arg(long)]
        container: Option<String>,
        /// Block devices to image with the disk profile (repeatable): /dev/nvme1n1.
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Wait until the collection is finished; exit 3 unless all its evidence is there.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Progress (items, bytes, rate, ETA) on stderr even when it is not a terminal.
        #[arg(long)]
        progress: bool,
    },
    /// Show a collection (id or prefix): status, items, sizes, hashes, what failed and why.
    Show { collection: String },
    /// List recent collections, newest first.
    Collections {
        /// Only this host's (hostname, id or prefix, instance id).
        #[arg(long)]
        host: Option<String>,
        /// Most collections listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show an item's manifest (id or prefix): source, host, hashes, chunks, gaps, acquisition.
    Item { item: String },
    /// Write an item's exact raw bytes to a file (or stdout with `-o -`), checked against the
    /// SHA-256 sealed in custody. ITEM is an id or prefix, or COLLECTION:NAME.
    Export {
        item: String,
        /// The item by name (or path on the host, or base name) in collection ITEM.
        #[arg(long)]
        name: Option<String>,
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// A whole collection as one tar (items, manifests, custody, SHA256SUMS), streamed to a
    /// file or to stdout with `-o -`.
    Archive {
        collection: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Chain of custody.
    Custody {
        #[command(subcommand)]
        cmd: CustodyCmd,
    },
    /// Load an offline collection (`cairn-agent collect --out DIR`) into the collector; run
    /// it again to finish one that was interrupted.
    Import { dir: PathBuf },
    /// The timeline of a host (or --all): `cairn timeline HOST|--all [--from] [--to] [--kind]
    /// [--grep]`, `cairn timeline export -o FILE`, `cairn timeline searches`, `cairn timeline
    /// sources`.
    Timeline(Box<timeline::TimelineArgs>),
    /// Cut a host (or one container) off the network, except its channel to the collector,
    /// loopback and what --allow lists; waits for the agent to confirm what it enforced.
    Isolate {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
        /// Keep reachable: CIDR[,tcp/PORT|udp/PORT][,NOTE] (repeatable), e.g. a jump host
        /// `10.0.0.5,tcp/22,jump host`, a resolver, the instance metadata service.
        #[arg(long = "allow")]
        allow: Vec<String>,
    },
    /// Undo an isolation of the host (or of --container).
    Release {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
    },
    /// Freeze a container (cgroup.freeze) or a process tree (SIGSTOP): its memory can still
    /// be captured.
    Freeze {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Thaw what freeze stopped.
    Thaw {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Kill a container (cgroup.kill) or a process tree (SIGKILL).
    Kill {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Mark a host (or --container) for a last-breath collection: when the host shuts down
    /// (the agent's SIGTERM) or the container exits, its agent sends the volatile documents,
    /// the flight recorder and the container's writable layer before they are gone.
    /// `--clear` removes the mark.
    LastBreath {
        host: String,
        #[command(flatten)]
        c: ContainArgs,
        /// Remove the mark instead.
        #[arg(long)]
        clear: bool,
    },
    /// What is contained on a host now (who, when, why) and its containment history.
    Containment { host: String },
    /// API and enrollment tokens (admin only): `tokens list`, `tokens revoke ID`.
    Tokens {
        #[command(subcommand)]
        cmd: Option<TokensCmd>,
    },
}

/// What every containment command takes.
#[derive(clap::Args)]
struct ContainArgs {
    /// Why: recorded in the host's chain of custody.
    #[arg(long)]
    reason: String,
    /// Only this container (id or unique prefix), not the host.
    #[arg(long)]
    container: Option<String>,
    /// Return once requested instead of waiting for the agent's confirmation.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting for the agent after this many seconds (exit 9).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand)]
enum HostsCmd {
    /// List enrolled hosts (the default).
    List,
    /// A host's self-test: every check of the last report, what to fix, the history.
    Readiness {
        host: String,
        /// Most reports in the history.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// A host's live events (what its sensor sent), newest last.
    Events {
        host: String,
        /// Since: RFC 3339 or relative (-1h, -15m). Default: the last hour.
        #[arg(long, allow_hyphen_values = true)]
        from: Option<String>,
        /// Only this kind (process_exec, tcp_connect, …).
        #[arg(long)]
        kind: Option<String>,
        /// Most events.
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// Retire a host: its agent is refused from now on, its evidence and custody are kept.
    Retire {
        host: String,
        /// Why: recorded with the host.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// Every API and enrollment token (never a secret).
    List,
    /// Revoke a token by its id (6 hex digits or more) or an API token's name.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum CustodyCmd {
    /// Check the custody chain and every stored byte of the collection; exit 8 if anything is broken.
    Verify { collection: String },
    /// Print the custody log.
    Log { collection: String },
}

pub async fn run(cli: Cli) -> Result<i32> {
    let api = Api::new(&cli.api, &cli.token, cli.ca_cert.as_deref())?;
    let json_out = cli.json;
    match &cli.cmd {
        Cmd::Fleet { window } => hosts::fleet(&api, window.as_deref(), json_out).await,
        Cmd::Hosts { cmd, sort, window } => match cmd {
            None | Some(HostsCmd::List) => {
                hosts::list(&api, sort.as_deref(), window.as_deref(), json_out).await
            }
            Some(HostsCmd::Readiness { host, limit }) => {
                hosts::readiness(&api, host, *limit, json_out).await
            }
            Some(HostsCmd::Events {
                host,
                from,
                kind,
                limit,
            }) => {
                hosts::events(
                    &api,
                    host,
                    from.as_deref(),
                    kind.as_deref(),
                    *limit,
                    json_out,
                )
                .await
            }
            Some(HostsCmd::Retire { host, reason }) => {
                hosts::retire(&api, host, reason, json_out).await
            }
        },
        Cmd::Tokens { cmd } => match cmd {
            None | Some(TokensCmd::List) => hosts::tokens(&api, json_out).await,
            Some(TokensCmd::Revoke { id }) => hosts::revoke(&api, id, json_out).await,
        },
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
            progress,
        } => {
            let req = collections::Request {
                host,
                profile,
                reason,
                paths,
                pid: *pid,
                container: container.as_deref(),
                devices,
            };
            let progress = *progress || std::io::IsTerminal::is_terminal(&std::io::stderr());
            let wait = wait.then_some((Duration::from_secs(*timeout), progress));
            collections::collect(&api, &req, wait, json_out).await
        }
        Cmd::Show { collection } => collections::show(&api, collection, json_out).await,
        Cmd::Collections { host, limit } => {
            collections::list(&api, host.as_deref(), *limit, json_out).await
        }
        Cmd::Item { item } => collections::item(&api, item, json_out).await,
        Cmd::Export {
            item,
            name,
            output,
            force,
        } => evidence::export(&api, item, name.as_deref(), output, *force, json_out).await,
        Cmd::Archive {
            collection,
            output,
            force,
        } => evidence::archive(&api, collection, output, *force, json_out).await,
        Cmd::Custody {
            cmd: CustodyCmd::Verify { collection },
        } => custody_verify(&api, collection, json_out).await,
        Cmd::Custody {
            cmd: CustodyCmd::Log { collection },
        } => custody_log(&api, collection, json_out).await,
        Cmd::Import { dir } => evidence::import(&api, dir, json_out).await,
        Cmd::Timeline(args) => timeline::run(&api, args, json_out).await,
        Cmd::Isolate { host, c, allow } => {
            contain(&api, "isolate", host, c, None, allow, json_out).await
        }
        Cmd::Release { host, c } => contain(&api, "release", host, c, None, &[], json_out).await,
        Cmd::Freeze { host, c, pid } => contain(&api, "freeze", host, c, *pid, &[], json_out).await,
        Cmd::Thaw { host, c, pid } => contain(&api, "thaw", host, c, *pid, &[], json_out).await,
        Cmd::Kill { host, c, pid } => contain(&api, "kill", host, c, *pid, &[], json_out).await,
        Cmd::LastBreath { host, c, clear } => {
            let action = if *clear {
                "unmark-last-breath"
            } else {
                "last-breath"
            };
            contain(&api, action, host, c, None, &[], json_out).await
        }
        Cmd::Containment { host } => containment::show(&api, host, json_out).await,
    }
}

async fn contain(
    api: &Api,
    action: &str,
    host: &str,
    c: &ContainArgs,
    pid: Option<u32>,
    allow: &[String],
    json_out: bool,
) -> Result<i32> {
    let ask = containment::Ask {
        host,
        action,
        reason: &c.reason,
        container: c.container.as_deref(),
        pid,
        allow,
        wait: (!c.no_wait).then(|| Duration::from_secs(c.timeout)),
    };
    containment::contain(api, &ask, json_out).await
}

async fn custody_verify(api: &Api, collection: &str, json_out: bool) -> Result<i32> {
    let v = api
        .post(
            &format!("/api/v1/collections/{}/verify", seg(collection)),
            &json!({}),
        )
        .await?;
    // Check the signed chain here too, with the collector's public key, so the verdict
    // does not rest on the server's word alone.
    let log = api
        .get(&format!("/api/v1/collections/{}/custody", seg(collection)))
        .await?;
    let local = verify_log_locally(&log);
    let ok = v["ok"].as_bool() == Some(true) && local.is_ok();
    if json_out {
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
            println!("CUSTODY BROKEN: {}", printable(e));
        }
        if let Err(e) = &local {
            println!("CUSTODY BROKEN (client check): {e}");
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Verify }.code())
}

async fn custody_log(api: &Api, collection: &str, json_out: bool) -> Result<i32> {
    let v = api
        .get(&format!("/api/v1/collections/{}/custody", seg(collection)))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    for r in v["records"].as_array().into_iter().flatten() {
        println!(
            "{:>3}  {}  {:<18} {:<40} {}",
            s(&r["seq"]),
            time_s(&r["time"]),
            s(&r["action"]),
            s(&r["actor"]),
            s(&r["details"])
        );
    }
    Ok(0)
}
