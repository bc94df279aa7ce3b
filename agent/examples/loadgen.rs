//! `loadgen`: many simulated agents in one process, for `cargo xtask bench load`.
//!
//! Each simulated agent is what `cairn-agent run` is with its sensor off, built from the
//! agent's own library: it enrolls with the token (its own key, CSR, certificate and agent id,
//! in its own state directory), keeps one QUIC connection with mutual TLS
//! (`transport::connection`), runs the control stream (`transport::control`: hello,
//! heartbeats, commands, `collection_done` through the outbox) and uploads every item of a
//! `volatile` collection with `transport::upload`, its chunks hashed and compressed by the
//! real pipeline (`collect::PlannedItem::produce`). It is an example, so nothing of it ships
//! in the agent binary.
//!
//! What a collection sends (`--capture`):
//! - `shared` (the default): the six volatile documents are captured once, for real, when the
//!   generator starts; each agent sends them as its own, with its own identity in `host.json`
//!   and its own `collected_at` in each document (so no chunk is deduplicated at the
//!   collector), plus the empty `events.jsonl` an agent without a sensor sends. A thousand
//!   real captures of this one machine would measure its /proc and the generator, not the
//!   collector.
//! - `live`: each agent runs the real capture (`collect::plan`) for every collection.
//!
//! The generator rewrites `--report FILE` (JSON) every second with what it saw.

use anyhow::{bail, Context, Result};
use cairn_agent::capture::volatile::{self, VolatileOptions};
use cairn_agent::collect::{self, CollectOptions, Journal, PlannedItem};
use cairn_agent::config::{AgentConfig, StateDir};
use cairn_agent::identity::{self, MetadataConfig, MetadataMode};
use cairn_agent::transport::connection::Connector;
use cairn_agent::transport::control::{self, ControlHandler, Outbox};
use cairn_agent::transport::enroll;
use cairn_agent::transport::upload::{self, ChunkSpool};
use cairn_protocol::manifest::{CollectRequest, HostIdentity, ItemHeader, ItemKind, Source};
use cairn_protocol::pipeline::PipelineOptions;
use cairn_protocol::wire::{AgentStatus, Message};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Simulated cairn agents speaking the real protocol, for cargo xtask bench load")]
struct Args {
    /// The collector's QUIC address, HOST:PORT.
    #[arg(long)]
    collector: String,
    /// An enrollment token with a use for every agent.
    #[arg(long)]
    token: String,
    /// The collector CA's SHA-256 fingerprint, pinned at enrollment.
    #[arg(long)]
    ca_sha256: String,
    /// How many agents this process runs.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Number of the first agent (hostnames `load-NNNNN`), when several generators share one
    /// collector.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// The agents' state directories go under DIR/agent-NNNNN.
    #[arg(long)]
    state: PathBuf,
    /// Rewritten every second with the counters, as JSON.
    #[arg(long)]
    report: PathBuf,
    /// Enrollments, and first connections, in flight at once.
    #[arg(long, default_value_t = 32)]
    ramp: usize,
    /// What a volatile collection sends (see the module documentation).
    #[arg(long, value_enum, default_value = "shared")]
    capture: Capture,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Capture {
    Shared,
    Live,
}

/// What every agent of this process counts.
#[derive(Default)]
struct Counters {
    enrolled: AtomicU64,
    enroll_failed: AtomicU64,
    /// Agents whose control stream is welcomed now.
    connected: AtomicU64,
    /// Control sessions welcomed, reconnections included.
    sessions: AtomicU64,
    /// Control sessions that ended after their welcome.
    disconnects: AtomicU64,
    commands: AtomicU64,
    collections_done: AtomicU64,
    items_sealed: AtomicU64,
    items_failed: AtomicU64,
    item_resumes: AtomicU64,
    /// Set when every agent was connected once.
    all_connected_ms: AtomicU64,
}

/// The volatile documents captured once (`--capture shared`).
struct Documents {
    /// (name, parsed document, whether it was pretty-printed)
    docs: Vec<(String, Value, bool)>,
}

impl Documents {
    fn capture() -> Result<Documents> {
        let opts = VolatileOptions {
            metadata: never_ask_metadata(),
            ..Default::default()
        };
        let mut docs = Vec::new();
        for a in volatile::collect(&opts) {
            let v: Value = serde_json::from_slice(&a.bytes)
                .with_context(|| format!("captured {} is not JSON", a.name))?;
            docs.push((a.name, v, a.bytes.contains(&b'\n')));
        }
        Ok(Documents { docs })
    }

    /// This agent's copy: its identity in host.json, its time in every document.
    fn for_agent(&self, host: &HostIdentity) -> Result<Vec<(String, Vec<u8>)>> {
        let now = cairn_protocol::rfc3339::now();
        let mut out = Vec::new();
        for (name, doc, pretty) in &self.docs {
            let mut doc = doc.clone();
            doc["collected_at"] = json!(now);
            if name == "host.json" {
                doc["identity"] = serde_json::to_value(host)?;
            }
            let bytes = if *pretty {
                serde_json::to_vec_pretty(&doc)?
            } else {
                serde_json::to_vec(&doc)?
            };
            out.push((name.clone(), bytes));
        }
        Ok(out)
    }
}

fn never_ask_metadata() -> MetadataConfig {
    MetadataConfig {
        mode: MetadataMode::Never,
        ..Default::default()
    }
}

struct SimAgent {
    n: usize,
    cfg: AgentConfig,
    state: StateDir,
    host: HostIdentity,
    connector: Arc<Connector>,
    spool: Arc<ChunkSpool>,
    /// Whether uploads wait for a full collector, as the agent's do.
    pause: Arc<upload::UploadPause>,
    outbox: Outbox,
    /// Collections seen, so a command repeated after a reconnect runs once.
    seen: Mutex<HashSet<String>>,
    /// Collections not finished or not yet acknowledged, named in each hello.
    running: Mutex<HashSet<String>>,
    welcomed: AtomicBool,
    shared: Option<Arc<Documents>>,
    counters: Arc<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The control stream's side of a simulated agent (a newtype: the trait is the agent
/// crate's, `Arc` is std's).
#[derive(Clone)]
struct Handler(Arc<SimAgent>);

impl std::ops::Deref for Handler {
    type Target = SimAgent;
    fn deref(&self) -> &SimAgent {
        &self.0
    }
}

impl ControlHandler for Handler {
    fn hello(&self) -> Message {
        let mut active: Vec<String> = lock(&self.running).iter().cloned().collect();
        for m in self.outbox.undelivered() {
            if let Message::CollectionDone { collection_id, .. } = m {
                active.push(collection_id);
            }
        }
        control::hello(self.host.clone(), Some(active))
    }

    /// Called first by the control loop, which runs only after the collector's welcome.
    fn status(&self) -> AgentStatus {
        if !self.welcomed.swap(true, Ordering::SeqCst) {
            self.counters.connected.fetch_add(1, Ordering::SeqCst);
            self.counters.sessions.fetch_add(1, Ordering::SeqCst);
        }
        AgentStatus {
            sensor_mode: "off".into(),
            sensor_reason: Some("sensor_enabled = false (load generator)".into()),
            events_lost: 0,
            events_queued: 0,
            uploads_paused: None,
            containers: Vec::new(),
        }
    }

    /// A simulated host enforces nothing: it says so.
    fn contain(&self, req: cairn_protocol::containment::Request) {
        let e = cairn_agent::containment::ContainError::Refused(
            "a simulated agent (loadgen) contains nothing".into(),
        );
        let o = cairn_agent::containment::failure(&req, &e);
        self.outbox.push(Message::Contained(Box::new(o)));
    }

    fn collect(&self, req: CollectRequest) {
        if lock(&self.seen).insert(req.collection_id.clone()) {
            self.counters.commands.fetch_add(1, Ordering::SeqCst);
            lock(&self.running).insert(req.collection_id.clone());
            tokio::spawn(run_collection(self.0.clone(), req));
        }
    }
}

impl SimAgent {
    fn ended_session(&self) {
        if self.welcomed.swap(false, Ordering::SeqCst) {
            self.counters.connected.fetch_sub(1, Ordering::SeqCst);
            self.counters.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The collection's items, planned as the agent plans them.
    async fn plan(self: &Arc<Self>, req: &CollectRequest) -> (Vec<PlannedItem>, Vec<String>) {
        let Some(shared) = &self.shared else {
            let opts = CollectOptions {
                volatile: VolatileOptions {
                    metadata: never_ask_metadata(),
                    ..Default::default()
                },
                journal: Some(self.journal()),
                ..Default::default()
            };
            let r = req.clone();
            return match tokio::task::spawn_blocking(move || collect::plan(&r, &opts)).await {
                Ok(p) => (p.items, p.errors),
                Err(e) => (Vec::new(), vec![format!("capture task failed: {e}")]),
            };
        };
        if req.profile != "volatile" {
            let e = format!(
                "this load generator sends volatile collections, not {}",
                req.profile
            );
            return (Vec::new(), vec![e]);
        }
        // Half a megabyte of JSON to copy and write: not on the async workers, which drive
        // every agent's connection.
        let (shared, host) = (shared.clone(), self.host.clone());
        let docs = match tokio::task::spawn_blocking(move || shared.for_agent(&host)).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return (Vec::new(), vec![format!("volatile documents: {e:#}")]),
            Err(e) => return (Vec::new(), vec![format!("volatile documents: {e}")]),
        };
        let mut items: Vec<PlannedItem> = docs
            .into_iter()
            .map(|(name, bytes)| {
                let source = Source {
                    name,
                    media_type: Some("application/json".into()),
                    ..Default::default()
                };
                PlannedItem::from_bytes(header(req, ItemKind::VolatileArtifact, source), bytes)
            })
            .collect();
        // With its sensor off, an agent's flight recorder is empty: the item is sent all the same.
        let journal = Source {
            name: "events.jsonl".into(),
            path: Some(self.state.journal().display().to_string()),
            media_type: Some("application/x-ndjson".into()),
            ..Default::default()
        };
        items.push(PlannedItem::from_bytes(
            header(req, ItemKind::EventJournal, journal),
            Vec::new(),
        ));
        (items, Vec::new())
    }

    fn journal(&self) -> Journal {
        Journal {
            recorder: None,
            dir: self.state.journal(),
            window: Duration::from_secs(self.cfg.journal_window_secs),
        }
    }
}

fn header(req: &CollectRequest, kind: ItemKind, source: Source) -> ItemHeader {
    ItemHeader {
        item_id: uuid::Uuid::new_v4().to_string(),
        collection_id: req.collection_id.clone(),
        kind,
        source,
        chunk_size: cairn_protocol::CHUNK_SIZE as u64,
        acquisition_start: cairn_protocol::rfc3339::now(),
        expected_len: None,
    }
}

/// One collection, its items uploaded one after the other as the agent does, then
/// `collection_done` through the outbox.
async fn run_collection(agent: Arc<SimAgent>, req: CollectRequest) {
    let (planned, mut errors) = agent.plan(&req).await;
    let pipeline = PipelineOptions::default();
    let mut items = Vec::new();
    for item in planned {
        let header = item.header.clone();
        let name = header.source.name.clone();
        items.push(header.item_id.clone());
        let host = agent.host.clone();
        let pipeline = pipeline.clone();
        let sent = upload::send_item(
            &agent.connector,
            &agent.spool,
            &agent.pause,
            header,
            move |sink| item.produce(&host, &pipeline, sink),
        )
        .await;
        match sent {
            Ok(s) => {
                agent.counters.items_sealed.fetch_add(1, Ordering::SeqCst);
                agent
                    .counters
                    .item_resumes
                    .fetch_add(u64::from(s.resumed), Ordering::SeqCst);
            }
            Err(e) => {
                agent.counters.items_failed.fetch_add(1, Ordering::SeqCst);
                tracing::warn!("agent {}: item {name}: {e:#}", agent.n);
                errors.push(format!("{name}: {e:#}"));
            }
        }
    }
    agent.outbox.push(Message::CollectionDone {
        collection_id: req.collection_id.clone(),
        items,
        errors,
    });
    agent
        .counters
        .collections_done
        .fetch_add(1, Ordering::SeqCst);
    lock(&agent.running).remove(&req.collection_id);
}

/// This agent's identity: the machine's, with its own name and ids.
fn identity_of(base: &HostIdentity, n: usize) -> HostIdentity {
    let mut h = base.clone();
    h.hostname = format!("load-{n:05}");
    h.machine_id = Some(
        cairn_protocol::sha256_hex(format!("cairn-loadgen machine {n}").as_bytes())[..32]
            .to_string(),
    );
    h.boot_id = Some(uuid::Uuid::new_v4().to_string());
    h
}

/// Enroll in `state` (retrying a few times: the collector may be busy), then load the config.
async fn enroll_one(args: &Args, state: &StateDir, host: &HostIdentity) -> Result<AgentConfig> {
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Each simulated agent is its own machine (its own machine id): its own host.
        let who = enroll::EnrollAs {
            host: Some(host.clone()),
            new_identity: false,
        };
        match enroll::enroll(state, &args.collector, &args.token, &args.ca_sha256, who).await {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                tracing::warn!("enrollment in {}: {e:#}; retrying", state.root.display());
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    let mut cfg = state.load()?;
    // As `cairn-agent run` with the sensor off.
    cfg.sensor_enabled = false;
    cfg.metadata = "never".into();
    state.save(&cfg)?;
    std::fs::create_dir_all(state.journal())?;
    Ok(cfg)
}

/// Enroll, connect (holding a ramp permit until the first handshake is done), then keep a
/// control session open, reconnecting as `cairn-agent run` does.
async fn agent_main(
    args: Arc<Args>,
    n: usize,
    base: Arc<HostIdentity>,
    shared: Option<Arc<Documents>>,
    ramp: Arc<Semaphore>,
    counters: Arc<Counters>,
) -> Result<()> {
    let state = StateDir::new(args.state.join(format!("agent-{n:05}")));
    let permit = ramp.acquire().await?;
    let host = identity_of(&base, n);
    let cfg = match enroll_one(&args, &state, &host).await {
        Ok(c) => c,
        Err(e) => {
            counters.enroll_failed.fetch_add(1, Ordering::SeqCst);
            bail!("agent {n}: enrollment failed: {e:#}");
        }
    };
    counters.enrolled.fetch_add(1, Ordering::SeqCst);
    let connector = Arc::new(Connector::new(&state, &cfg).await?);
    let spool = ChunkSpool::new(state.spool(), cfg.spool_max_bytes);
    let agent = Arc::new(SimAgent {
        n,
        host,
        cfg,
        state,
        connector,
        spool,
        pause: Arc::default(),
        outbox: Outbox::default(),
        seen: Mutex::new(HashSet::new()),
        running: Mutex::new(HashSet::new()),
        welcomed: AtomicBool::new(false),
        shared,
        counters,
    });
    let heartbeat = Duration::from_secs(agent.cfg.heartbeat_secs.max(1));
    let mut conn = agent.connector.get().await;
    drop(permit);
    let handler = Handler(agent.clone());
    loop {
        let end = control::session(&conn, &handler, &agent.outbox, heartbeat).await;
        tracing::warn!("agent {n}: control stream ended: {:#}", end.error);
        agent.ended_session();
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn = agent.connector.get().await;
    }
}

fn report(args: &Args, c: &Counters, started: Instant, capture_ms: u64) -> Value {
    let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
    json!({
        "agents": args.agents,
        "first": args.first,
        "capture": if args.capture == Capture::Shared { "shared" } else { "live" },
        "shared_capture_ms": capture_ms,
        "uptime_ms": started.elapsed().as_millis() as u64,
        "enrolled": g(&c.enrolled),
        "enroll_failed": g(&c.enroll_failed),
        "connected": g(&c.connected),
        "all_connected_ms": g(&c.all_connected_ms),
        "sessions": g(&c.sessions),
        "disconnects": g(&c.disconnects),
        "commands": g(&c.commands),
        "collections_done": g(&c.collections_done),
        "items_sealed": g(&c.items_sealed),
        "items_failed": g(&c.items_failed),
        "item_resumes": g(&c.item_resumes),
    })
}

fn write_report(path: &std::path::Path, v: &Value) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Arc::new(Args::parse());
    cairn_private_fs::create_private_dir(&args.state)?;
    let started = Instant::now();
    let shared = match args.capture {
        Capture::Shared => Some(Arc::new(
            tokio::task::spawn_blocking(Documents::capture).await??,
        )),
        Capture::Live => None,
    };
    let capture_ms = started.elapsed().as_millis() as u64;
    let base = Arc::new(identity::host_identity_in(
        &never_ask_metadata(),
        std::path::Path::new("/"),
    ));
    let counters = Arc::new(Counters::default());
    let ramp = Arc::new(Semaphore::new(args.ramp.max(1)));
    for n in args.first..args.first + args.agents {
        let a = (args.clone(), base.clone(), shared.clone());
        let (ramp, counters) = (ramp.clone(), counters.clone());
        tokio::spawn(async move {
            if let Err(e) = agent_main(a.0, n, a.1, a.2, ramp, counters).await {
                tracing::error!("{e:#}");
            }
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if counters.all_connected_ms.load(Ordering::SeqCst) == 0
            && counters.connected.load(Ordering::SeqCst) >= args.agents as u64
        {
            let ms = started.elapsed().as_millis().max(1) as u64;
            counters.all_connected_ms.store(ms, Ordering::SeqCst);
        }
        write_report(&args.report, &report(&args, &counters, started, capture_ms))?;
    }
    let v = report(&args, &counters, started, capture_ms);
    write_report(&args.report, &v)?;
    println!("{v}");
    Ok(())
}
