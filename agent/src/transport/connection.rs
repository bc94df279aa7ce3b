//! One QUIC connection to the collector, re-established with capped exponential backoff and
//! full jitter ([`super::backoff`]).
//!
//! The control loop and every upload share it; whoever finds it closed reconnects, and the
//! others pick up the new one. Each new connection starts its own control stream (hello).
//!
//! Several collectors may serve one fleet: the address is `HOST:PORT[,HOST:PORT…]`, and a name
//! may resolve to several addresses. The agent stays with the one it reached; when it is lost,
//! the next is tried at once (a dead instance costs at most [`FAILOVER_TIMEOUT`]), and only
//! after every address failed does the backoff wait. Names are resolved again on each round,
//! so a DNS change is followed.

use super::backoff::Backoff;
use crate::config::{AgentConfig, StateDir};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{watch, Mutex};

/// A handshake with one of several collectors gives up after this long, to try the next.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Every address of `HOST:PORT[,HOST:PORT…]`, in the order given, without repeats. Fails only
/// when no entry resolves.
pub async fn resolve_all(collectors: &str) -> Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut errors = Vec::new();
    for entry in collectors
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match tokio::net::lookup_host(entry).await {
            Ok(addrs) => {
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => errors.push(format!("{entry:?}: {e}")),
        }
    }
    if out.is_empty() {
        anyhow::bail!(
            "cannot resolve collector address {collectors:?} (expected HOST:PORT, or several separated by commas){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
    }
    Ok(out)
}

fn bind_for(addr: &SocketAddr) -> Result<quinn::Endpoint> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    quinn::Endpoint::client(bind).context("cannot open a UDP socket")
}

/// Resolve `HOST:PORT` (the first of a list) and bind a client endpoint of the same address
/// family: enrollment talks to one collector.
pub async fn client_endpoint(collector: &str) -> Result<(quinn::Endpoint, SocketAddr)> {
    let addr = resolve_all(collector)
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("collector address {collector:?} resolves to nothing"))?;
    Ok((bind_for(&addr)?, addr))
}

pub struct Connector {
    endpoint: quinn::Endpoint,
    /// Every collector address, and which one is tried (or connected) now.
    addrs: std::sync::Mutex<(Vec<SocketAddr>, usize)>,
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
        let addrs = resolve_all(&cfg.collector).await?;
        let endpoint = bind_for(&addrs[0])?;
        Ok(Connector {
            endpoint,
            addrs: std::sync::Mutex::new((addrs, 0)),
            config,
            current: Mutex::new(None),
            max_backoff: Duration::from_secs(cfg.reconnect_max_secs.max(1)),
            generation: watch::channel(0).0,
            collector: cfg.collector.clone(),
        })
    }

    fn lock_addrs(&self) -> std::sync::MutexGuard<'_, (Vec<SocketAddr>, usize)> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The collector address this agent reaches (or tries) now.
    pub fn addr(&self) -> SocketAddr {
        let a = self.lock_addrs();
        a.0[a.1 % a.0.len()]
    }

    /// Every collector address known: host isolation keeps all of them reachable.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.lock_addrs().0.clone()
    }

    /// One attempt at the current address, no retry: for `ping` and the self-test.
    pub async fn connect_once(&self) -> Result<quinn::Connection> {
        let (addr, several) = {
            let a = self.lock_addrs();
            (a.0[a.1 % a.0.len()], a.0.len() > 1)
        };
        let connecting = self.endpoint.connect_with(
            self.config.clone(),
            addr,
            cairn_protocol::COLLECTOR_SERVER_NAME,
        )?;
        let what = || {
            format!(
                "QUIC/TLS handshake with the collector at {} ({addr}) failed",
                self.collector
            )
        };
        let conn = if several {
            tokio::time::timeout(FAILOVER_TIMEOUT, connecting)
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {FAILOVER_TIMEOUT:?}"))
                .with_context(what)?
                .with_context(what)?
        } else {
            connecting.await.with_context(what)?
        };
        Ok(conn)
    }

    /// Move to the next address; true when a whole round has been tried.
    async fn next_addr(&self) -> bool {
        let round_done = {
            let mut a = self.lock_addrs();
            a.1 = (a.1 + 1) % a.0.len();
            a.1 == 0
        };
        if round_done {
            // Names may now resolve elsewhere (an instance replaced).
            if let Ok(fresh) = resolve_all(&self.collector).await {
                self.lock_addrs().0 = fresh;
            }
        }
        round_done
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
                    tracing::info!(
                        "connected to collector {} ({})",
                        self.collector,
                        c.remote_address()
                    );
                    *cur = Some(c.clone());
                    self.generation.send_modify(|g| *g += 1);
                    return c;
                }
                Err(e) => {
                    if !self.next_addr().await {
                        tracing::warn!("{e:#}; trying the next collector address");
                        continue;
                    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_list_of_collectors_resolves_in_order_without_repeats() {
        let a = resolve_all(" 127.0.0.1:7443, 127.0.0.2:7443 ,127.0.0.1:7443,")
            .await
            .unwrap();
        assert_eq!(
            a,
            vec![
                "127.0.0.1:7443".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:7443".parse().unwrap()
            ]
        );
        // One bad entry does not hide the good ones; none good is an error naming them.
        let a = resolve_all("no-port-here,127.0.0.3:1").await.unwrap();
        assert_eq!(a, vec!["127.0.0.3:1".parse::<SocketAddr>().unwrap()]);
        let e = resolve_all("no-port-here, ").await.unwrap_err().to_string();
        assert!(e.contains("no-port-here") && e.contains("HOST:PORT"), "{e}");
    }
}
