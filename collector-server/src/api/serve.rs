//! The HTTPS (or loopback-only plain HTTP) listener: one task per connection, HTTP/1.1 and
//! HTTP/2 on the same port.

use crate::admission::{Admission, LogLimiter, Refused};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

pub fn tls_acceptor(data: &crate::datadir::DataDir) -> Result<tokio_rustls::TlsAcceptor> {
    let (certs, key) = data.server_identity()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("loading the server certificate for HTTPS")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// How long a client has to finish its TLS handshake (and, on plain HTTP, to send its first
/// request headers) before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    app: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
) -> Result<()> {
    let log = Arc::new(LogLimiter::new(Duration::from_secs(10)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if let Some(line) = log.note("API accept failed", &e.to_string()) {
                    tracing::error!("{line}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handshake = match admission.begin(peer.ip()) {
            Ok(h) => h,
            Err(Refused(why)) => {
                if let Some(line) = log.note("API connection refused", &format!("{peer}: {why}")) {
                    tracing::warn!("{line}");
                }
                drop(stream);
                continue;
            }
        };
        let app = app.clone();
        let tls = tls.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let result = match tls {
                Some(acceptor) => {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                        () = handshake.evicted() => return,
                    };
                    match accepted {
                        Ok(Ok(s)) => {
                            let _established = handshake.established();
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            if let Some(line) =
                                log.note("TLS handshake failed", &format!("{peer}: {e}"))
                            {
                                tracing::info!("{line}");
                            }
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => {
                    let _established = handshake.established();
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}
