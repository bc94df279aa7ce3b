//! `cairn-agent run`: the running agent, the policy above the mechanisms of [`crate::transport`].
//!
//! - [`recording`]: the sensor, the flight recorder and the live event stream.
//! - [`collections`]: collection commands, run once each, their items sent as they are produced.
//! - [`schedule`]: the readiness self-test, at start and every `selftest_interval_secs`.
//! - [`containment`]: isolate, release, freeze, thaw, kill — enforced, proven, answered.
//! - [`last_breath`]: a marked host's or container's bounded collection as it goes away.
//!
//! [`run`] starts them and keeps one control session open at a time (reconnecting forever);
//! the [`Agent`] is what they share.

pub mod collections;
pub mod containment;
pub mod last_breath;
pub mod recording;
pub mod schedule;

use crate::collect::CollectOptions;
use crate::config::{AgentConfig, StateDir};
use crate::flight_recorder::FlightRecorder;
use crate::transport::backoff::Backoff;
use crate::transport::connection::Connector;
use crate::transport::control::{self, ControlHandler, Outbox};
use crate::transport::events::EventShipper;
use crate::transport::upload::{ChunkSpool, UploadPause};
use anyhow::Result;
use cairn_protocol::manifest::{CollectRequest, HostIdentity};
use cairn_protocol::wire::{AgentStatus, Message};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub struct Agent {
    pub cfg: AgentConfig,
    pub state: StateDir,
    /// Events for the collector's live stream.
    pub shipper: Arc<EventShipper>,
    pub connector: Arc<Connector>,
    pub spool: Arc<ChunkSpool>,
    /// Whether uploads wait for room at the collector (the heartbeat says so).
    pub pause: Arc<UploadPause>,
    pub options: CollectOptions,
    /// Collections seen, so a command repeated after a reconnect runs once.
    seen: Mutex<HashSet<String>>,
    /// Collections being captured or uploaded now.
    running: Mutex<HashSet<String>>,
    /// Finished collections' `collection_done`, until the collector has read them.
    outbox: Outbox,
    /// The flight recorder, once `run` opened it: collections slice it (flushing first).
    recorder: OnceLock<Arc<Mutex<FlightRecorder>>>,
    /// Sensor mode and the reason for a fallback, for the heartbeat.
    sensor_status: Mutex<(String, Option<String>)>,
    /// What the eBPF sensor attached, when it runs on eBPF (the self-test's BPF proof).
    sensor_proof: Mutex<Option<String>>,
    /// Events the sensor reported lost (sum of `events_lost` counts seen).
    sensor_lost: Arc<AtomicU64>,
    /// What is isolated or frozen here, kept in the state directory.
    pub containment: Arc<crate::containment::Containment>,
    /// Containment commands seen, so one repeated after a reconnect runs once.
    seen_containment: Mutex<HashSet<String>>,
    /// Last-breath calls the collector refused, marks already answered.
    last_breaths: last_breath::LastBreaths,
    /// Per running collection, its items as planned and those sealed: a shutdown that cuts a
    /// last breath short says which did not make it.
    planned: Mutex<HashMap<String, Vec<String>>>,
    sealed: Mutex<HashMap<String, Vec<String>>>,
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
        let shipper = match EventShipper::with_spool(4 << 20, &state.event_spool(), 256 << 20) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{e:#}; live events wait in memory only (32 MiB)");
                EventShipper::new(32 << 20)
            }
        };
        let containment = Arc::new(crate::containment::Containment::with_roots(
            crate::containment::Roots::detect(&state.root, cfg.host_root.as_deref()),
        ));
        let c = containment.clone();
        options.volatile.isolation = Some(crate::capture::volatile::IsolationState(Arc::new(
            move || containment::in_force_json(&c),
        )));
        Ok(Arc::new(Agent {
            state: state.clone(),
            shipper,
            cfg,
            connector,
            spool,
            pause: Arc::new(UploadPause::default()),
            options,
            seen: Mutex::new(HashSet::new()),
            running: Mutex::new(HashSet::new()),
            outbox: Outbox::default(),
            recorder: OnceLock::new(),
            sensor_status: Mutex::new(("off".into(), None)),
            sensor_proof: Mutex::new(None),
            sensor_lost: Arc::new(AtomicU64::new(0)),
            containment,
            seen_containment: Mutex::new(HashSet::new()),
            last_breaths: last_breath::LastBreaths::default(),
            planned: Mutex::new(HashMap::new()),
            sealed: Mutex::new(HashMap::new()),
        }))
    }

    /// What the heartbeat reports.
    pub fn status(&self) -> AgentStatus {
        let sensor = lock(&self.sensor_status).clone();
        AgentStatus {
            sensor_mode: sensor.0,
            sensor_reason: sensor.1,
            events_lost: self.sensor_lost.load(Ordering::Relaxed) + self.shipper.dropped_total(),
            events_queued: self.shipper.queued() as u64,
            uploads_paused: self.pause.status(),
            containers: if self.cfg.report_containers {
                crate::containers::running_containers(std::path::Path::new("/proc"))
            } else {
                Vec::new()
            },
        }
    }

    fn host(&self) -> HostIdentity {
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

/// The control stream's side of the agent: its hello names the collections not finished
/// (running, or done and not yet acknowledged), so the collector does not fail them.
impl ControlHandler for Arc<Agent> {
    fn hello(&self) -> Message {
        let mut active: Vec<String> = lock(&self.running).iter().cloned().collect();
        for m in self.outbox.undelivered() {
            if let Message::CollectionDone { collection_id, .. } = m {
                active.push(collection_id);
            }
        }
        control::hello(self.host(), Some(active))
    }

    fn status(&self) -> AgentStatus {
        Agent::status(self)
    }

    fn status_bell(&self) -> Option<&tokio::sync::Notify> {
        Some(self.pause.bell())
    }

    /// The collector's evidence recipient, kept for `collect --encrypt`.
    fn welcomed(&self, welcome: &Message) {
        if let Message::Welcome {
            evidence_recipient, ..
        } = welcome
        {
            if let Err(e) = self
                .state
                .save_evidence_recipient(evidence_recipient.as_deref())
            {
                tracing::warn!("{e:#}");
            }
        }
    }

    fn collect(&self, req: CollectRequest) {
        if lock(&self.seen).insert(req.collection_id.clone()) {
            tracing::info!(
                "collection {} requested by {}: profile {}, reason {:?}",
                req.collection_id,
                req.requested_by,
                req.profile,
                req.reason
            );
            tokio::spawn(collections::run_collection(self.clone(), req));
        }
    }

    fn contain(&self, req: cairn_protocol::containment::Request) {
        containment::contain(self, req);
    }

    fn contained_ack(&self, id: &str) {
        containment::acknowledged(self, id);
    }

    fn last_breath_refused(&self, collection_id: &str, reason: &str) {
        self.last_breaths.refused(collection_id, reason);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run forever: record events, stay connected, execute commands.
pub async fn run(agent: Arc<Agent>) -> Result<()> {
    tracing::info!(
        "agent {} starting; collector {}",
        agent.cfg.agent_id,
        agent.cfg.collector
    );
    // Spooled chunks of a previous run belong to collections that died with it.
    let (items, bytes) = agent.spool.remove_leftovers();
    if items > 0 {
        tracing::info!(
            "removed the spool of {items} item(s) of a previous run ({bytes} bytes): their collections ended with it"
        );
    }
    // Isolation and freezes in force before this start are in force again before anything
    // connects (a reboot, a crash).
    let a = agent.clone();
    tokio::task::spawn_blocking(move || containment::restore(&a)).await?;
    let a = agent.clone();
    let _sensor = tokio::task::spawn_blocking(move || recording::start(&a)).await??;
    tokio::spawn(crate::transport::events::ship(
        agent.shipper.clone(),
        agent.connector.clone(),
    ));
    tokio::spawn(schedule::readiness(agent.clone()));
    tokio::spawn(containment::watch_reports(
        agent.clone(),
        Duration::from_secs(5),
    ));
    tokio::spawn(last_breath::watch_containers(
        agent.clone(),
        last_breath::WATCH_PERIOD,
    ));
    let heartbeat = Duration::from_secs(agent.cfg.heartbeat_secs.max(1));
    let mut backoff = Backoff::standard();
    loop {
        let conn = agent.connector.get().await;
        let end = control::session(&conn, &agent, &agent.outbox, heartbeat).await;
        if end.welcomed {
            backoff.reset();
        }
        let wait = backoff.next_delay();
        tracing::warn!(
            "control stream ended: {:#}; again in {:.1}s",
            end.error,
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

/// SIGTERM: a marked host's last breath (within `last_breath_secs`), then the caller exits.
pub async fn shutdown(agent: &Arc<Agent>) {
    let budget = Duration::from_secs(
        agent
            .cfg
            .last_breath_secs
            .clamp(1, cairn_protocol::containment::MAX_LAST_BREATH_SECS),
    );
    last_breath::on_shutdown(agent, budget).await;
}

/// One hello round trip over mutual TLS: proves enrollment, certificates and reachability.
pub async fn ping(agent: &Agent) -> Result<Duration> {
    Ok(control::probe(&agent.connector, agent.host()).await?.rtt)
}

/// Returns memory freed after a one-off burst (BTF parsing, the self-test's probe, a
/// collection's chunk buffers) to the system, so the agent's resident size is what it keeps,
/// not what it once needed.
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
