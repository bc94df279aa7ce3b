//! `cairn-collector serve`: the wiring. Opens the data directory's stores and keys, builds the
//! [`State`] every edge shares, binds the QUIC and HTTP listeners and runs them. Nothing else
//! in the crate constructs stores or services.

use crate::admission::Admission;
use crate::collections::{Collections, Limits};
use crate::containment::Containments;
use crate::custody::Custody;
use crate::datadir::{Backends, DataDir};
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::state::State;
use crate::storage::encrypted_blobs::EncryptedBlobs;
use crate::storage::Stores;
use crate::triggers::sequence::Sequences;
use crate::triggers::{TriggerConfig, Triggers};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct ServeOptions {
    pub quic_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub api_plain_http: bool,
    /// fsync each chunk before acknowledging it.
    pub fsync: bool,
    /// Store new chunks encrypted to the evidence key.
    pub encrypt_at_rest: bool,
    /// The metadata database and the blob store (the embedded ones by default).
    pub backends: Backends,
}

/// The stores, keys and services of a data directory.
pub fn load_state(
    data: &DataDir,
    backends: &Backends,
    fsync: bool,
    encrypt_at_rest: bool,
) -> Result<Arc<State>> {
    data.check_private()?;
    let metrics = Arc::new(Metrics::default());
    let meta = data.open_meta(backends)?;
    let (chunks, s3) = data.open_blob_store(backends, fsync, &metrics)?;
    if let Some(s3) = &s3 {
        eprintln!("evidence in {}", s3.describe());
        if *s3.lock_status() != crate::storage::s3::LockStatus::Enabled {
            tracing::warn!(
                "the bucket has no S3 Object Lock ({:?}): whoever holds its write keys can overwrite or delete evidence; custody will show it, but cannot bring it back",
                s3.lock_status()
            );
        }
    }
    let heads = data.open_head_store(meta.as_ref(), s3)?;
    let evidence_key = Arc::new(data.evidence_key()?);
    let blobs: Arc<dyn crate::storage::BlobStore> = if encrypt_at_rest {
        Arc::new(EncryptedBlobs::new(chunks, evidence_key.clone()))
    } else {
        chunks
    };
    let stores = Stores {
        meta,
        blobs,
        heads,
        scratch: data.scratch()?,
        metrics,
    };
    let custody = Custody::new(data.custody_key()?, stores.clone());
    let sessions = Arc::new(Sessions::default());
    Ok(Arc::new(State {
        collections: Collections::new(
            stores.clone(),
            custody.clone(),
            sessions.clone(),
            Limits::default(),
        ),
        containments: Containments::new(stores.clone(), custody.clone(), sessions.clone()),
        sequences: Sequences::new(stores.clone()),
        stores,
        custody,
        sessions,
        authority: data.authority()?,
        ca_pem: data.ca_pem()?,
        triggers: Triggers::new(TriggerConfig::load(&data.path("triggers.toml"))?),
        fleet: crate::fleet::Fleet::load(&data.path("vpc-peering.json"))?,
        fleet_cache: Default::default(),
        health: Default::default(),
        evidence_key,
    }))
}

/// The steps `[[containment]]` rules add after alerts' collections, started as their
/// predecessors finish.
async fn advance_sequences(state: Arc<State>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        let st = state.clone();
        match tokio::task::spawn_blocking(move || {
            st.sequences.advance(&st.collections, &st.containments)
        })
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("trigger sequences: {e}"),
            Err(e) => tracing::warn!("trigger sequences: {e}"),
        }
    }
}

/// The dispatcher. Several instances share the database: requests made through another
/// instance are found here (every second, a few queries per 500 hosts connected to this one)
/// and sent by the host's control loop, which drops what it sent already. Queued requests
/// wake only as many hosts as there are free slots, oldest first, at each tick and whenever
/// a slot frees here (waking every waiting host each second starved 10,000 control streams:
/// BENCHMARKS.md, #16 load).
async fn poll_shared_requests(state: Arc<State>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.sessions.dispatcher_rung() => {}
        }
        let st = state.clone();
        let due = tokio::task::spawn_blocking(move || -> crate::error::Result<Vec<String>> {
            let hosts = st.sessions.hosts();
            let mut due = st.collections.hosts_to_wake(&hosts)?;
            for batch in hosts.chunks(500) {
                due.extend(st.meta().hosts_with_pending_containment(batch)?);
            }
            Ok(due)
        })
        .await;
        match due {
            Ok(Ok(hosts)) => {
                for h in hosts {
                    state.sessions.wake(&h);
                }
            }
            Ok(Err(e)) => tracing::warn!("requests of other instances: {e}"),
            Err(e) => tracing::warn!("requests of other instances: {e}"),
        }
    }
}

/// Custody heads that could not be published (the object store away) are tried again.
async fn publish_pending_heads(state: Arc<State>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        if state.custody.heads_pending() == 0 {
            continue;
        }
        let st = state.clone();
        if let Ok(left) = tokio::task::spawn_blocking(move || st.custody.publish_pending()).await {
            if left == 0 {
                tracing::info!("every pending custody head is published");
            }
        }
    }
}

/// Raise RLIMIT_NOFILE's soft limit to its hard limit; returns the limit in force.
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// The API and the console on a runtime of their own. Their handlers call the store on their
/// async workers; under a burst of requests (10,000 collections asked at once) they held
/// every worker of a shared runtime waiting for a database connection, the QUIC endpoint
/// starved, and agents' sessions timed out by the thousand (BENCHMARKS.md, #16 load). Apart,
/// a busy API is slow to answer, and the evidence path does not notice.
fn run_api_apart(
    app: axum::Router,
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
) -> Result<tokio::sync::oneshot::Receiver<Result<()>>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("cairn-api")
        .enable_all()
        .build()
        .context("cannot start the API's runtime")?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cairn-api".into())
        .spawn(move || {
            let r = rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                crate::api::run(app, listener, tls, admission).await
            });
            let _ = done.send(r);
        })
        .context("cannot start the API's thread")?;
    Ok(finished)
}

pub async fn serve(data: DataDir, opts: ServeOptions) -> Result<()> {
    if opts.api_plain_http && !opts.api_listen.ip().is_loopback() {
        bail!(
            "--api-plain-http is only allowed on a loopback address ({} is not): tokens and evidence would cross the network in clear",
            opts.api_listen
        );
    }
    let encrypt_at_rest = opts.encrypt_at_rest || data.config()?.encrypt_at_rest;
    let (db, blobs) = opts.backends.describe();
    eprintln!("metadata in {db}; evidence chunks in {blobs}");
    let state = load_state(&data, &opts.backends, opts.fsync, encrypt_at_rest)?;
    if encrypt_at_rest {
        eprintln!(
            "chunks are stored encrypted to the evidence key {} ({}): back it up",
            state.evidence_key.recipient(),
            data.path(crate::datadir::EVIDENCE_KEY).display()
        );
    }
    let endpoint = crate::quic::endpoint(&data, opts.quic_listen)?;
    eprintln!("quic listening on {}", endpoint.local_addr()?);
    let listener = tokio::net::TcpListener::bind(opts.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the API", opts.api_listen))?;
    let tls = if opts.api_plain_http {
        eprintln!("api listening on http://{}", listener.local_addr()?);
        None
    } else {
        eprintln!("api listening on https://{}", listener.local_addr()?);
        Some(crate::api::tls_acceptor(&data)?)
    };
    // File descriptors bound what the API can hold: raise the soft limit to the hard one, and
    // keep the API's connections well under it (QUIC connections need no descriptor each).
    let nofile = raise_nofile_limit();
    let api_admission = Admission::new("API", 64, (nofile / 2).clamp(64, 8192) as usize);
    let quic_admission = Admission::new("QUIC", 256, 50_000);
    let quic = tokio::spawn(crate::quic::run(state.clone(), endpoint, quic_admission));
    // One listener: the JSON API under /api/v1 and the console at /.
    let app = crate::api::router(state.clone()).merge(crate::console::router(state.clone()));
    let api = run_api_apart(app, listener.into_std()?, tls, api_admission)?;
    tokio::spawn(advance_sequences(state.clone()));
    tokio::spawn(publish_pending_heads(state.clone()));
    if opts.backends.database.is_some() {
        tokio::spawn(poll_shared_requests(state.clone()));
    }
    tokio::select! {
        r = quic => r.context("QUIC server task")?,
        r = api => r.context("API server thread")?,
        _ = tokio::signal::ctrl_c() => { eprintln!("shutting down"); Ok(()) }
    }
}
