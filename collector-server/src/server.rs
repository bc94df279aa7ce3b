//! `cairn-collector serve`: wires the data directory to the QUIC and HTTP listeners.

use crate::custody::Custody;
use crate::datadir::DataDir;
use crate::db::Db;
use crate::ingest::Ctx;
use crate::sessions::Sessions;
use crate::store::ChunkStore;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything a request handler or an agent session needs.
pub struct State {
    pub ctx: Ctx,
    pub sessions: Sessions,
    pub authority: crate::authority::Authority,
    pub ca_pem: String,
    /// Profile mapping, dedup and rate limits for `/api/v1/triggers/...`.
    pub triggers: crate::triggers::Triggers,
}

impl State {
    pub fn db(&self) -> &Db {
        &self.ctx.db
    }
}

pub struct ServeOptions {
    pub quic_listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub api_plain_http: bool,
    /// fsync each chunk before acknowledging it.
    pub fsync: bool,
}

pub fn load_state(data: &DataDir, fsync: bool) -> Result<Arc<State>> {
    let db = Arc::new(data.open_db()?);
    let custody = Custody::new(data.custody_key()?);
    Ok(Arc::new(State {
        ctx: Ctx {
            db,
            store: ChunkStore::new(data.chunks(), fsync),
            custody,
        },
        sessions: Sessions::default(),
        authority: data.authority()?,
        ca_pem: data.ca_pem()?,
        triggers: crate::triggers::Triggers::new(crate::triggers::TriggerConfig::load(
            &data.path("triggers.toml"),
        )?),
    }))
}

pub fn server_identity(
    data: &DataDir,
) -> Result<(
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
)> {
    let certs = rustls_pemfile::certs(&mut data.server_cert_pem()?.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server.pem is not a PEM certificate chain")?;
    let key = rustls_pemfile::private_key(&mut data.server_key_pem()?.as_bytes())
        .context("server.key is not a PEM private key")?
        .context("server.key holds no private key")?;
    Ok((certs, key))
}

pub async fn serve(data: DataDir, opts: ServeOptions) -> Result<()> {
    if opts.api_plain_http && !opts.api_listen.ip().is_loopback() {
        bail!(
            "--api-plain-http is only allowed on a loopback address ({} is not): tokens and evidence would cross the network in clear",
            opts.api_listen
        );
    }
    let state = load_state(&data, opts.fsync)?;
    let endpoint = crate::quic::endpoint(&data, &state, opts.quic_listen)?;
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
