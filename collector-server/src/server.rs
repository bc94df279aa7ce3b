//! `cairn-collector serve`: the wiring. Opens the data directory's stores and keys, builds the
//! [`State`] every edge shares, binds the QUIC and HTTP listeners and runs them. Nothing else
//! in the crate constructs stores or services.

use crate::collections::Collections;
use crate::custody::Custody;
use crate::datadir::DataDir;
use crate::sessions::Sessions;
use crate::state::State;
use crate::storage::chunk_dir::ChunkDir;
use crate::storage::Stores;
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
}

/// The stores, keys and services of a data directory.
pub fn load_state(data: &DataDir, fsync: bool) -> Result<Arc<State>> {
    let db = data.open_db()?;
    let heads = data.open_heads(&db)?;
    let stores = Stores {
        meta: Arc::new(db),
        blobs: Arc::new(ChunkDir::new(data.chunks(), fsync)),
        heads: Arc::new(heads),
    };
    let custody = Custody::new(data.custody_key()?, stores.clone());
    let sessions = Arc::new(Sessions::default());
    Ok(Arc::new(State {
        collections: Collections::new(stores.clone(), custody.clone(), sessions.clone()),
        stores,
        custody,
        sessions,
        authority: data.authority()?,
        ca_pem: data.ca_pem()?,
        triggers: Triggers::new(TriggerConfig::load(&data.path("triggers.toml"))?),
    }))
}

pub async fn serve(data: DataDir, opts: ServeOptions) -> Result<()> {
    if opts.api_plain_http && !opts.api_listen.ip().is_loopback() {
        bail!(
            "--api-plain-http is only allowed on a loopback address ({} is not): tokens and evidence would cross the network in clear",
            opts.api_listen
        );
    }
    let state = load_state(&data, opts.fsync)?;
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
    let quic = tokio::spawn(crate::quic::run(state.clone(), endpoint));
    let api = tokio::spawn(crate::api::run(state.clone(), listener, tls));
    tokio::select! {
        r = quic => r.context("QUIC server task")?,
        r = api => r.context("API server task")?,
        _ = tokio::signal::ctrl_c() => { eprintln!("shutting down"); Ok(()) }
    }
}
