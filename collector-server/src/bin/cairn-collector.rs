//! `cairn-collector`: initialise, run and administer a collector.

use anyhow::Result;
use cairn_collector::datadir::{parse_duration, rfc3339, Backends, DataDir};

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cairn-collector",
    version,
    about = "cairn collector: receives, verifies and keeps evidence from cairn agents"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the metadata and the evidence bytes live; default: the data directory's SQLite file
/// and chunk directory. Every command of one collector must be given the same (or put them in
/// DATA/collector.toml as `database = …`, `blobs = …`).
#[derive(clap::Args, Clone, Default)]
struct BackendArgs {
    /// PostgreSQL for metadata, custody and the timeline: postgres://user[:password]@host[:port]/db
    /// (or libpq's key=value form). Several collectors may share one.
    #[arg(long, env = "CAIRN_DATABASE")]
    database: Option<String>,
    /// S3-compatible object storage for evidence chunks and custody heads: s3://bucket/prefix.
    /// Endpoint, region and keys come from the AWS environment (AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID…), ~/.aws/config and credentials (AWS_PROFILE), or the EC2
    /// instance role; `?endpoint=URL&region=R&path_style=true` in the URL override them.
    #[arg(long, env = "CAIRN_BLOBS")]
    blobs: Option<String>,
    /// With --blobs: write every chunk and head with an S3 Object Lock retention of this many
    /// days (the bucket must have Object Lock enabled, or the collector refuses to start).
    #[arg(long)]
    object_lock_days: Option<u32>,
    /// governance or compliance (default: compliance).
    #[arg(long)]
    object_lock_mode: Option<String>,
}

impl BackendArgs {
    fn resolve(self, data: &DataDir) -> Result<Backends> {
        Backends::resolve(
            &data.config()?,
            self.database,
            self.blobs,
            self.object_lock_days,
            self.object_lock_mode,
        )
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a data directory: CA, server certificate, custody key, database, first tokens.
    Init {
        /// Data directory to create.
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// One more instance of the collector whose data directory this is: copy its keys
        /// and settings (same CA, custody key, QUIC reset key) instead of making new ones. The
        /// instances must share --database and --blobs.
        #[arg(long, value_name = "DATA_OF_ANOTHER_INSTANCE")]
        from: Option<PathBuf>,
        #[command(flatten)]
        backends: BackendArgs,
    },
    /// Serve agents (QUIC) and the HTTP API.
    Serve {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// UDP address for agents.
        #[arg(long, default_value = "0.0.0.0:7443")]
        quic_listen: SocketAddr,
        /// TCP address for the HTTPS API.
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
        /// Serve the API over plain HTTP (only allowed on a loopback address).
        #[arg(long)]
        api_plain_http: bool,
        /// Acknowledge chunks without fsyncing them first (faster, not crash-safe).
        #[arg(long)]
        no_fsync: bool,
        /// Store new evidence chunks encrypted (age) to the data directory's evidence.age-key;
        /// chunks stored before stay readable. Back the key up: without it the evidence is lost.
        #[arg(long)]
        encrypt_at_rest: bool,
        #[command(flatten)]
        backends: BackendArgs,
    },
    /// Manage tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Print a one-time link that signs a person in to the web console (valid 15 minutes,
    /// one use). Open it in a browser that reaches the API listener.
    ConsoleLink {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// Who signs in (kept in the custody log for what they do).
        #[arg(long, default_value = "admin")]
        name: String,
        /// admin, analyst or viewer (a trigger cannot sign in).
        #[arg(long, default_value = "analyst")]
        role: String,
        /// The console's base URL as the browser reaches it.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        url: String,
        /// How long the link is valid: 30s, 10m, 2h.
        #[arg(long, default_value = "15m")]
        ttl: String,
        #[command(flatten)]
        backends: BackendArgs,
    },
    /// Copy this data directory's embedded stores (cairn.db, chunks/, the head log) to
    /// PostgreSQL and/or S3-compatible object storage, verify every collection's custody there,
    /// and switch the data directory over (collector.toml) only when all verify. The source is
    /// only read; stop `serve` first.
    Migrate {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// The PostgreSQL database to copy the metadata into (empty): postgres://…
        #[arg(long)]
        to: Option<String>,
        /// The object store to copy the chunks and custody heads into: s3://bucket/prefix.
        #[arg(long)]
        blobs: Option<String>,
        #[arg(long)]
        object_lock_days: Option<u32>,
        #[arg(long)]
        object_lock_mode: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Chain of custody maintenance.
    Custody {
        #[command(subcommand)]
        cmd: CustodyCmd,
    },
}

#[derive(Subcommand)]
enum CustodyCmd {
    /// Publish every custody chain's head as the database has it now, after restoring a data
    /// directory without its custody-heads.jsonl. This trusts the database: records deleted
    /// before now can no longer be detected.
    PublishHeads {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        #[command(flatten)]
        backends: BackendArgs,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create an enrollment token for agents (a fleet token: many uses; a host token: --uses 1).
    Create {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid: 30s, 10m, 2h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backends: BackendArgs,
    },
    /// Create an API token for a person or a detection system.
    Api {
        #[arg(long, env = "CAIRN_DATA", default_value = "/var/lib/cairn-collector")]
        data: PathBuf,
        /// Name recorded in the custody log for everything done with it.
        #[arg(long)]
        name: String,
        /// admin, analyst, viewer (reads only) or trigger (starts collections within the trigger
        /// policy, nothing else).
        #[arg(long, default_value = "analyst")]
        role: String,
        #[command(flatten)]
        backends: BackendArgs,
    },
}

/// Errors are one line (with their causes), never a backtrace: what went wrong and what to do
/// is in the message.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // Everything the collector writes (evidence, keys, the database) is its own to read.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init {
            data,
            names,
            json,
            from: Some(from),
            backends,
        } => {
            if !names.is_empty() {
                anyhow::bail!("--name with --from: an instance presents the certificate of the collector it joins; give every instance's name to that collector's init");
            }
            let (dir, from) = (DataDir::new(&data), DataDir::new(from));
            let b = backends.resolve(&from)?;
            dir.init_peer(&from, &b)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"data_dir": dir.root, "peer_of": from.root})
                );
            } else {
                println!(
                    "{} is one more instance of the collector at {}: same CA, custody and reset keys.",
                    dir.root.display(),
                    from.root.display()
                );
                println!("Next: cairn-collector serve --data {}", dir.root.display());
            }
        }
        Cmd::Init {
            data,
            names,
            json,
            from: None,
            backends,
        } => {
            let dir = DataDir::new(&data);
            let b = backends.resolve(&dir)?;
            let r = dir.init(&names, &b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("Collector data directory: {}", r.data_dir);
                println!();
                println!("CA certificate:            {}", r.ca_cert);
                println!("CA fingerprint (SHA-256):  {}", r.ca_sha256);
                println!(
                    "Enrollment token:          {}  ({} uses, expires {})",
                    r.enrollment_token, r.enrollment_token_uses, r.enrollment_token_expires_at
                );
                println!(
                    "Admin API token:           {}  (also in {}/admin.token)",
                    r.admin_token, r.data_dir
                );
                println!();
                println!("Next: cairn-collector serve --data {}", r.data_dir);
                println!(
                    "Then on each host: cairn-agent enroll --collector COLLECTOR:7443 --token {} --ca-sha256 {}",
                    r.enrollment_token, r.ca_sha256
                );
            }
        }
        Cmd::Serve {
            data,
            quic_listen,
            api_listen,
            api_plain_http,
            no_fsync,
            encrypt_at_rest,
            backends,
        } => {
            let dir = DataDir::new(data);
            let backends = backends.resolve(&dir)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cairn_collector::server::serve(
                dir,
                cairn_collector::server::ServeOptions {
                    quic_listen,
                    api_listen,
                    api_plain_http,
                    fsync: !no_fsync,
                    encrypt_at_rest,
                    backends,
                },
            ))?;
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    data,
                    uses,
                    ttl,
                    label,
                    json,
                    backends,
                },
        } => {
            if uses == 0 {
                anyhow::bail!("--uses must be at least 1");
            }
            let dir = DataDir::new(&data);
            let db = dir.open_meta(&backends.resolve(&dir)?)?;
            let (token, expires) = db.create_enroll_token(uses, parse_duration(&ttl)?, &label)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": token, "uses": uses, "expires_at": rfc3339(expires)})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "enrollment token for {uses} host(s), expires {}",
                    rfc3339(expires)
                );
            }
        }
        Cmd::Custody {
            cmd: CustodyCmd::PublishHeads { data, backends },
        } => {
            let data = DataDir::new(&data);
            let b = backends.resolve(&data)?;
            let metrics = std::sync::Arc::new(cairn_collector::metrics::Metrics::default());
            let meta = data.open_meta(&b)?;
            let (blobs, s3) = data.open_blob_store(&b, true, &metrics)?;
            // Publishing is the way out of "heads missing": open them without that check.
            let heads: std::sync::Arc<dyn cairn_collector::storage::HeadStore> = match s3 {
                Some(s3) => s3,
                None => std::sync::Arc::new(cairn_collector::storage::head_file::HeadFile::open(
                    &data.path(cairn_collector::datadir::HEADS),
                    true,
                )?),
            };
            let stores = cairn_collector::storage::Stores {
                meta,
                blobs,
                heads,
                scratch: data.path(cairn_collector::datadir::SCRATCH),
                metrics,
            };
            let custody = cairn_collector::custody::Custody::new(data.custody_key()?, stores);
            let n = custody.republish_heads()?;
            eprintln!("published the heads of {n} custody chain(s) as the database holds them now");
        }
        Cmd::Migrate {
            data,
            to,
            blobs,
            object_lock_days,
            object_lock_mode,
            json,
        } => {
            let dir = DataDir::new(&data);
            let target = Backends::resolve(
                &Default::default(),
                to,
                blobs,
                object_lock_days,
                object_lock_mode,
            )?;
            let r = cairn_collector::migrate::migrate(&dir, &target, &|p| eprintln!("{p}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for (table, rows) in &r.tables {
                    println!("{table:<24} {rows:>10} rows");
                }
                println!(
                    "chunks: {} copied ({} bytes), {} already there; {} custody heads published",
                    r.chunks_copied, r.bytes_copied, r.chunks_present, r.heads_published
                );
                println!(
                    "custody verified on the target: {} collections",
                    r.collections_verified
                );
            }
            if !r.collections_failed.is_empty() {
                for (c, why) in &r.collections_failed {
                    eprintln!("collection {c}: {why}");
                }
                anyhow::bail!(
                    "{} collection(s) did not verify on the target: the data directory was NOT switched over; the source is untouched",
                    r.collections_failed.len()
                );
            }
            eprintln!(
                "{} now uses the targets (collector.toml); start `cairn-collector serve` again",
                dir.root.display()
            );
        }
        Cmd::ConsoleLink {
            data,
            name,
            role,
            url,
            ttl,
            backends,
        } => {
            let role = match cairn_collector::storage::Role::parse(&role) {
                Some(cairn_collector::storage::Role::Trigger) | None => anyhow::bail!(
                    "role {role:?} cannot sign in to the console: use admin, analyst or viewer"
                ),
                Some(r) => r,
            };
            let ttl = parse_duration(&ttl)?;
            let dir = DataDir::new(&data);
            let db = dir.open_meta(&backends.resolve(&dir)?)?;
            let code = db.create_link(&name, role, ttl)?;
            println!("{}/login/link/{code}", url.trim_end_matches('/'));
            eprintln!(
                "one use, valid {}s, signs in {name:?} as {}",
                ttl,
                role.as_str()
            );
        }
        Cmd::Token {
            cmd:
                TokenCmd::Api {
                    data,
                    name,
                    role,
                    backends,
                },
        } => {
            let role = cairn_collector::storage::Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("unknown role {role:?}: use admin, analyst, viewer or trigger")
            })?;
            let dir = DataDir::new(&data);
            let db = dir.open_meta(&backends.resolve(&dir)?)?;
            println!("{}", db.create_api_token(&name, role)?);
        }
    }
    Ok(())
}
