//! One QUIC connection to the collector, re-established with capped exponential backoff and
//! full jitter ([`super::backoff`]).
//!
//! The control loop and every upload share it; whoever finds it closed reconnects, and the
//! others pick up the new one. Each new connection starts its own control stream (hello).

use super::backoff::Backoff;
use crate::config::{AgentConfig, StateDir};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// Resolve `HOST:PORT` and bind a client endpoint of the same address family.
pub async fn client_endpoint(collector: &str) -> Result<(quinn::Endpoint, SocketAddr)> {
    let addr = tokio::net::lookup_host(collector)
        .await
        .with_context(|| {
            format!("cannot resolve collector address {collector:?} (expected HOST:PORT)")
        })?
        .next()
        .with_context(|| format!("collector address {collector:?} resolves to nothing"))?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let endpoint = quinn::Endpoint::client(bind).context("cannot open a UDP socket")?;
    Ok((endpoint, addr))
}

pub struct Connector {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    config: quinn::ClientConfig,
    current: Mutex<Option<quinn::Connection>>,
    max_backoff: Duration,
    /// Bumped on each new connection, so the control loop knows to say hello again.
    generation: watch::Sender<u64>,
    pub collector: String,
}

impl Connector {
    pub async fn new(state: &StateDir, cfg: &AgentConfig) -> Result<Connector> {
        let config = super::tls::mutual_config(
            &state.read("ca.pem")?,
            &state.read("agent.pem")?,
            &state.read("agent.key")?,
        )?;
        let (endpoint, addr) = client_endpoint(&cfg.collector).await?;
        Ok(Connector {
            endpoint,
            addr,
            config,
            current: Mutex::new(None),
            max_backoff: Duration::from_secs(cfg.reconnect_max_secs.max(1)),
            generation: watch::channel(0).0,
            collector: cfg.collector.clone(),
        })
    }

    /// One attempt, no retry: for `ping` and the self-test.
    /// The collector's address as resolved when the agent started.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn connect_once(&self) -> Result<quinn::Connection> {
        let conn = self
            .endpoint
            .connect_with(
                self.config.clone(),
                self.addr,
                cairn_protocol::COLLECTOR_SERVER_NAME,
            )?
            .await
            .with_context(|| {
                format!(
                    "QUIC/TLS handshake with the collector at {} ({}) failed",
                    self.collector, self.addr
                )
            })?;
        Ok(conn)
    }

    /// The live connection, reconnecting (forever, with backoff) if there is none.
    pub async fn get(&self) -> quinn::Connection {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref() {
            if c.close_reason().is_none() {
                return c.clone();
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), self.max_backoff);
        loop {
            match self.connect_once().await {
                Ok(c) => {
                    tracing::info!("connected to collector {}", self.collector);
                    *cur = Some(c.clone());
                    self.generation.send_modify(|g| *g += 1);
                    return c;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!("{e:#}; retrying in {:.1}s", wait.as_secs_f64());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
