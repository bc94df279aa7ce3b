//! `cairn-agent run`: the control stream and the collections it starts.
//!
//! Each connection gets a control stream: hello, then heartbeats and commands. A finished
//! collection's `collection_done` goes into an outbox that is written on the current control
//! stream and kept until a heartbeat acknowledgment comes back after it (the stream is ordered,
//! so the collector has read it); a connection lost in between makes it go out again.

use super::connection::Connector;
use super::upload::{self, ChunkSpool, Produced};
use crate::collect::{plan, CollectOptions};
use crate::config::{AgentConfig, StateDir};
use anyhow::{anyhow, bail, Result};
use cairn_protocol::manifest::CollectRequest;
use cairn_protocol::wire::aio::{read_frame, write_message};
use cairn_protocol::wire::{Frame, Message};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

pub struct Agent {
    pub cfg: AgentConfig,
    pub state: StateDir,
    /// Events for the collector's live stream.
    pub shipper: Arc<super::events::EventShipper>,
    pub connector: Arc<Connector>,
    pub spool: Arc<ChunkSpool>,
    pub options: CollectOptions,
    /// Collections seen, so a command repeated after a reconnect runs once.
    seen: Mutex<HashSet<String>>,
    /// Collections being captured or uploaded now.
    running: Mutex<HashSet<String>>,
    outbox: Mutex<Vec<Message>>,
    outbox_bell: Notify,
    /// The flight recorder, once `run` opened it: collections slice it (flushing first).
    recorder: std::sync::OnceLock<Arc<Mutex<crate::flight_recorder::FlightRecorder>>>,
    /// Sensor mode and the reason for a fallback, for the heartbeat.
    sensor_status: Mutex<(String, Option<String>)>,
    /// What the eBPF sensor attached, when it runs on eBPF (the self-test's BPF proof).
    sensor_proof: Mutex<Option<String>>,
    /// Events the sensor reported lost (sum of `events_lost` counts seen).
    sensor_lost: Arc<std::sync::atomic::AtomicU64>,
}

impl Agent {
    pub async fn new(state: &StateDir) -> Result<Arc<Agent>> {
        Self::with_host_root(state, None).await
    }

    /// As [`Agent::new`], with `--host-root` overriding agent.toml's `host_root`.
    pub async fn with_host_root(
        state: &StateDir,
        host_root: Option<std::path::PathBuf>,
    ) -> Result<Arc<Agent>> {
        let mut cfg = state.load()?;
        if host_root.is_some() {
            cfg.host_root = host_root;
        }
        let connector = Arc::new(Connector::new(state, &cfg).await?);
        std::fs::create_dir_all(state.spool())?;
        let spool = ChunkSpool::new(state.spool(), cfg.spool_max_bytes);
        let mut options = CollectOptions::default();
        options.volatile.metadata = cfg.metadata_config();
        options.disk.profile_dirs = vec![state.profiles()];
        if let Some(root) = &cfg.host_root {
            options.volatile.proc_root = root.join("proc");
            options.volatile.host_root = root.clone();
            options.disk.root = root.clone();
            options.disk.proc_root = root.join("proc");
        }
        // Collections read the journal from disk; the recorder itself is opened by `run`,
        // which alone writes it.
        options.journal = Some(crate::collect::Journal {
            recorder: None,
            dir: state.journal(),
            window: Duration::from_secs(cfg.journal_window_secs),
        });
        // 4 MiB of event JSON in memory; beyond it events wait on disk (256 MiB, about
        // 400,000 events: hours of a busy host without its collector).
        let shipper =
            match super::events::EventShipper::with_spool(4 << 20, &state.event_spool(), 256 << 20)
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{e:#}; live events wait in memory only (32 MiB)");
                    super::events::EventShipper::new(32 << 20)
                }
            };
        Ok(Arc::new(Agent {
            state: state.clone(),
            shipper,
            cfg,
            connector,
            spool,
            options,
            seen: Mutex::new(HashSet::new()),
            running: Mutex::new(HashSet::new()),
            outbox: Mutex::new(Vec::new()),
            outbox_bell: Notify::new(),
            recorder: std::sync::OnceLock::new(),
            sensor_status: Mutex::new(("off".into(), None)),
            sensor_proof: Mutex::new(None),
            sensor_lost: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }))
    }

    /// What the heartbeat reports.
    pub fn status(&self) -> cairn_protocol::wire::AgentStatus {
        let sensor = lock(&self.sensor_status).clone();
        cairn_protocol::wire::AgentStatus {
            sensor_mode: sensor.0,
            sensor_reason: sensor.1,
            events_lost: self.sensor_lost.load(std::sync::atomic::Ordering::Relaxed)
                + self.shipper.dropped_total(),
            events_queued: self.shipper.queued() as u64,
            containers: if self.cfg.report_containers {
                crate::containers::running_containers(std::path::Path::new("/proc"))
            } else {
                Vec::new()
            },
        }
    }

    fn host(&self) -> cairn_protocol::manifest::HostIdentity {
        crate::identity::host_identity_in(
            &self.options.volatile.metadata,
            &self.options.volatile.host_root,
        )
    }

    /// What the self-test needs to know about this agent.
    pub fn selftest_options(
        &self,
        btf: Option<std::path::PathBuf>,
    ) -> crate::selftest::SelftestOptions {
        crate::selftest::SelftestOptions {
            state: self.state.clone(),
            host_root: self.options.volatile.host_root.clone(),
            running_sensor: lock(&self.sensor_proof).clone(),
            btf,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start the sensor and the flight recorder: every event goes to the journal on disk and to
/// the live stream. Returns the sensor, which runs until dropped.
fn start_recording(agent: &Arc<Agent>) -> Result<Option<crate::sensor::Sensor>> {
    if !agent.cfg.sensor_enabled {
        tracing::info!("sensor disabled in agent.toml (sensor_enabled = false)");
        return Ok(None);
    }
    let recorder = crate::flight_recorder::FlightRecorder::open(
        &agent.state.journal(),
        crate::flight_recorder::RecorderConfig {
            max_bytes: agent.cfg.journal_max_bytes,
            max_age: Duration::from_secs(agent.cfg.journal_max_age_secs),
            ..Default::default()
        },
    )?;
    let sensor = crate::sensor::Sensor::start(agent.cfg.sensor.clone())?;
    // Loading parses the kernel's BTF (tens of MB, freed once the programs are in); give
    // that memory back to the system instead of keeping it as the agent's resident set.
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = sensor.status().clone();
    match &status.reason {
        None => tracing::info!(
            "sensor running: {:?}, {} tracepoints",
            status.mode,
            status.tracepoints.len()
        ),
        Some(r) => tracing::warn!("sensor running in {:?} mode: {r}", status.mode),
    }
    if status.mode == crate::sensor::RunningMode::Ebpf {
        *lock(&agent.sensor_proof) = Some(format!(
            "the agent's eBPF sensor is loaded and attached to {} tracepoints, reading a {}-byte ring buffer",
            status.tracepoints.len(),
            status.ring_buffer_bytes.unwrap_or(0)
        ));
    }
    *lock(&agent.sensor_status) = (
        match status.mode {
            crate::sensor::RunningMode::Ebpf => "ebpf".into(),
            crate::sensor::RunningMode::Procfs => "procfs".into(),
        },
        status.reason.clone(),
    );
    let lost = agent.sensor_lost.clone();
    let events = sensor.subscribe();
    let shipper = agent.shipper.clone();
    let recorder = Arc::new(Mutex::new(recorder));
    let _ = agent.recorder.set(recorder.clone());
    std::thread::Builder::new()
        .name("flight-recorder".into())
        .spawn(move || loop {
            match events.recv_timeout(Duration::from_secs(1)) {
                Ok(ev) => {
                    if let Some(l) = &ev.lost {
                        lost.fetch_add(l.count, std::sync::atomic::Ordering::Relaxed);
                    }
                    // Serialised once: the same text goes to the journal and the wire.
                    let Ok(line) = serde_json::to_string(&ev) else {
                        continue;
                    };
                    let t = crate::flight_recorder::time_ns(&ev.time)
                        .unwrap_or_else(crate::flight_recorder::now_ns);
                    if let Err(e) = lock(&recorder).append(t, line.as_bytes()) {
                        tracing::warn!("flight recorder: {e:#}");
                    }
                    if let Ok(raw) = cairn_protocol::wire::RawEvent::from_json(line) {
                        shipper.push(raw);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = lock(&recorder).flush() {
                        tracing::warn!("flight recorder: {e:#}");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = lock(&recorder).flush();
                    return;
                }
            }
        })?;
    Ok(Some(sensor))
}

/// Run forever: record events, stay connected, execute commands.
pub async fn run(agent: Arc<Agent>) -> Result<()> {
    tracing::info!(
        "agent {} starting; collector {}",
        agent.cfg.agent_id,
        agent.cfg.collector
    );
    let a = agent.clone();
    let _sensor = tokio::task::spawn_blocking(move || start_recording(&a)).await??;
    // Loading BPF parses the kernel's BTF (megabytes, needed once): give it back.
    release_freed_memory();
    tokio::spawn(super::events::ship(
        agent.shipper.clone(),
        agent.connector.clone(),
    ));
    tokio::spawn(readiness_schedule(agent.clone()));
    loop {
        let conn = agent.connector.get().await;
        if let Err(e) = control_session(&agent, &conn).await {
            tracing::warn!("control stream ended: {e:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Returns memory freed after a one-off burst (BTF parsing, the self-test's probe) to the
/// system, so the agent's resident size is what it keeps, not what it once needed.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The readiness self-test at start and then every `selftest_interval_secs`, each report sent
/// to the collector; reports it could not take are retried every minute.
async fn readiness_schedule(agent: Arc<Agent>) {
    let opts = agent.selftest_options(None);
    let interval = Duration::from_secs(agent.cfg.selftest_interval_secs);
    loop {
        let report = crate::selftest::run(&opts).await;
        release_freed_memory();
        let (p, w, f) = report.counts();
        tracing::info!(
            "readiness self-test: {} ({p} pass, {w} warn, {f} fail) in {} ms",
            report.status.as_str(),
            report.duration_ms
        );
        for c in report
            .checks
            .iter()
            .filter(|c| c.status != cairn_protocol::readiness::CheckStatus::Pass)
        {
            tracing::warn!(
                "self-test {} {}: {} → {}",
                c.id,
                c.status.as_str(),
                c.measured,
                c.remediation
            );
        }
        let mut outcome =
            crate::selftest::collector::report(&opts, Some(&agent.connector), Some(&report)).await;
        let next = Instant::now() + interval;
        while let Err(e) = &outcome {
            tracing::warn!("readiness report not delivered (kept for later): {e:#}");
            tokio::time::sleep(Duration::from_secs(60)).await;
            outcome = crate::selftest::collector::report(&opts, Some(&agent.connector), None).await;
        }
        if interval.is_zero() {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

/// What a probe's hello round trip learned.
#[derive(Debug, Clone)]
pub struct Pong {
    pub rtt: Duration,
    /// The collector's clock when it answered (RFC 3339).
    pub server_time: String,
    /// Our clock half-way through the round trip, to compare with `server_time`.
    pub local_mid: time::OffsetDateTime,
    pub collector_version: String,
}

/// One hello round trip over mutual TLS: proves enrollment, certificates and reachability.
pub async fn ping(agent: &Agent) -> Result<Duration> {
    Ok(probe(&agent.connector, agent.host()).await?.rtt)
}

/// A hello round trip on a connection of its own, with a 10 s limit on each step.
pub async fn probe(
    connector: &Connector,
    host: cairn_protocol::manifest::HostIdentity,
) -> Result<Pong> {
    let limit = Duration::from_secs(10);
    let conn = tokio::time::timeout(limit, connector.connect_once())
        .await
        .map_err(|_| {
            anyhow!(
                "no QUIC handshake with the collector at {} within {} s (nothing answered on UDP)",
                connector.collector,
                limit.as_secs()
            )
        })??;
    let start = Instant::now();
    let local_start = time::OffsetDateTime::now_utc();
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(
        &mut send,
        Message::Hello {
            protocol_version: cairn_protocol::PROTOCOL_VERSION,
            agent_version: crate::tool_version(),
            host,
            active_collections: None,
        },
    )
    .await?;
    let reply = tokio::time::timeout(limit, read_frame(&mut recv)).await;
    let rtt = start.elapsed();
    let result = match reply {
        Ok(Ok(Some(Frame::Message(Message::Welcome {
            server_time,
            collector_version,
            ..
        })))) => Ok(Pong {
            rtt,
            server_time,
            local_mid: local_start + rtt / 2,
            collector_version,
        }),
        Ok(Ok(Some(Frame::Message(Message::Error { code, message })))) => {
            Err(anyhow!("collector refused us ({code}): {message}"))
        }
        Ok(Ok(_)) | Ok(Err(_)) => Err(anyhow!(
            "the collector closed the connection{}",
            conn.close_reason()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        Err(_) => Err(anyhow!("no answer from the collector within 10 s")),
    };
    conn.close(0u32.into(), b"probe done");
    result
}

fn hello(agent: &Agent) -> Message {
    let mut active: Vec<String> = lock(&agent.running).iter().cloned().collect();
    for m in lock(&agent.outbox).iter() {
        if let Message::CollectionDone { collection_id, .. } = m {
            active.push(collection_id.clone());
        }
    }
    Message::Hello {
        protocol_version: cairn_protocol::PROTOCOL_VERSION,
        agent_version: crate::tool_version(),
        host: agent.host(),
        active_collections: Some(active),
    }
}

async fn control_session(agent: &Arc<Agent>, conn: &quinn::Connection) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_message(&mut send, hello(agent)).await?;
    match read_frame(&mut recv).await? {
        Some(Frame::Message(Message::Welcome { agent_id, .. })) => {
            tracing::info!("collector welcomed us as {agent_id}");
        }
        Some(Frame::Message(Message::Error { code, message })) => {
            bail!("collector refused hello ({code}): {message}")
        }
        other => bail!("unexpected answer to hello: {other:?}"),
    }
    let (mut incoming, _reader) = super::read_messages(recv, "control stream", 64);
    control_loop(agent, &mut send, &mut incoming).await
}

async fn control_loop(
    agent: &Arc<Agent>,
    send: &mut quinn::SendStream,
    incoming: &mut mpsc::Receiver<Result<Message>>,
) -> Result<()> {
    let mut heartbeat = tokio::time::interval(Duration::from_secs(agent.cfg.heartbeat_secs.max(1)));
    // Outbox messages written on this stream, awaiting a heartbeat ack.
    let mut written = 0usize;
    let flush = |written: &mut usize| -> Vec<Message> {
        let out = lock(&agent.outbox);
        let new: Vec<Message> = out.iter().skip(*written).cloned().collect();
        *written = out.len();
        new
    };
    let pending = flush(&mut written);
    for m in pending {
        write_message(send, m).await?;
    }
    loop {
        tokio::select! {
            m = incoming.recv() => {
                match m.ok_or_else(|| anyhow!("control reader stopped"))?? {
                    Message::Collect(req) => {
                        write_message(send, Message::CommandAccepted { collection_id: req.collection_id.clone() }).await?;
                        if lock(&agent.seen).insert(req.collection_id.clone()) {
                            tracing::info!("collection {} requested by {}: profile {}, reason {:?}", req.collection_id, req.requested_by, req.profile, req.reason);
                            let agent = agent.clone();
                            tokio::spawn(async move { run_collection(agent, *req).await });
                        }
                    }
                    Message::HeartbeatAck { .. } => {
                        // Everything written before this ack was read by the collector.
                        let mut out = lock(&agent.outbox);
                        let n = written.min(out.len());
                        out.drain(..n);
                        written -= n;
                    }
                    Message::Error { code, message } => tracing::warn!("collector error ({code}): {message}"),
                    other => tracing::warn!("ignoring unexpected {} on the control stream", other.name()),
                }
            }
            _ = agent.outbox_bell.notified() => {
                let new = flush(&mut written);
                for m in new {
                    write_message(send, m).await?;
                }
                write_message(send, Message::Heartbeat { time: cairn_protocol::rfc3339::now(), status: None }).await?;
            }
            _ = heartbeat.tick() => {
                write_message(send, Message::Heartbeat { time: cairn_protocol::rfc3339::now(), status: Some(agent.status()) }).await?;
            }
        }
    }
}

async fn run_collection(agent: Arc<Agent>, req: CollectRequest) {
    let started = Instant::now();
    lock(&agent.running).insert(req.collection_id.clone());
    let (items, errors) = collect_and_upload(&agent, &req).await;
    // The pipeline's chunk buffers (tens of MiB during a capture) are not needed between
    // collections.
    release_freed_memory();
    tracing::info!(
        "collection {} finished in {:.1}s: {} item(s), {} error(s)",
        req.collection_id,
        started.elapsed().as_secs_f64(),
        items.len(),
        errors.len()
    );
    lock(&agent.outbox).push(Message::CollectionDone {
        collection_id: req.collection_id.clone(),
        items,
        errors,
    });
    lock(&agent.running).remove(&req.collection_id);
    agent.outbox_bell.notify_one();
}

/// Hash, compress and upload one item: a blocking producer runs the pipeline while the
/// upload streams its chunks. Returns once the collector sealed it.
pub async fn send_item(
    connector: &Arc<Connector>,
    spool: &Arc<ChunkSpool>,
    pipeline: &cairn_protocol::pipeline::PipelineOptions,
    item: crate::collect::PlannedItem,
    host: &cairn_protocol::manifest::HostIdentity,
) -> Result<upload::Sealed> {
    let header = item.header.clone();
    let (tx, rx) = mpsc::channel::<Produced>(4);
    let host = host.clone();
    let popts = pipeline.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let manifest = item.produce(&host, &popts, |c| {
            tx.blocking_send(Produced::Chunk(c)).is_ok()
        });
        if let Some(m) = manifest {
            let _ = tx.blocking_send(Produced::Done(Box::new(m)));
        }
    });
    let sealed = upload::upload(connector.clone(), spool.clone(), header, rx).await;
    let _ = producer.await;
    sealed
}

async fn collect_and_upload(
    agent: &Arc<Agent>,
    req: &CollectRequest,
) -> (Vec<String>, Vec<String>) {
    let mut opts = agent.options.clone();
    if let (Some(j), Some(rec)) = (opts.journal.as_mut(), agent.recorder.get()) {
        j.recorder = Some(rec.clone());
    }
    let r = req.clone();
    let planned = tokio::task::spawn_blocking(move || {
        let host =
            crate::identity::host_identity_in(&opts.volatile.metadata, &opts.volatile.host_root);
        (plan(&r, &opts), host)
    })
    .await;
    let (plan, host) = match planned {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![format!("capture task failed: {e}")]),
    };
    let mut errors = plan.errors;
    let mut items = Vec::new();
    for item in plan.items {
        let name = item.header.source.name.clone();
        items.push(item.header.item_id.clone());
        match send_item(
            &agent.connector,
            &agent.spool,
            &agent.options.pipeline,
            item,
            &host,
        )
        .await
        {
            Ok(s) => tracing::info!(
                "item {name} sealed: {} ({} chunks sent, {} resume(s))",
                s.sha256,
                s.chunks_sent,
                s.resumed
            ),
            Err(e) => {
                tracing::warn!("item {name}: {e:#}");
                errors.push(format!("{name}: {e:#}"));
            }
        }
    }
    (items, errors)
}
